// Types of cloudlet-sdk (src/index.js).

export interface ClientOptions {
  /** The server's base URL, e.g. `https://api.example.com`. */
  server: string;
  /** The app's name. */
  app: string;
  /** The platform adapter; detected (`wx`, `qq`, `tt`, `my`, then `fetch`) when left out. */
  adapter?: Adapter;
  /** Prefix of the storage key the session is kept under. */
  storageKey?: string;
  /** `anonymous`: open the realtime socket without a login, where the app allows it. */
  realtime?: { anonymous?: boolean };
}

/** The `request` capability: HTTP with a JSON body. */
export interface RequestCapability {
  request(request: {
    url: string;
    method: string;
    headers: Record<string, string>;
    body?: unknown;
  }): Promise<{ status: number; data: unknown; headers: Record<string, string> }>;
}

/** The `storage` capability: strings kept across restarts (where the session is kept). */
export interface StorageCapability {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The `login` capability: the platform's own login. */
export interface LoginCapability {
  /** The platform's login call, as the body of `POST …/auth/sessions`. */
  login(): Promise<Record<string, string>>;
}

/** The `subscribe` capability (WeChat only): `wx.requestSubscribeMessage`'s answers. */
export interface SubscribeCapability {
  requestSubscribe(templateIds: string[]): Promise<Record<string, SubscribeAnswer>>;
}

/** The `upload` capability: one file in the form the platform's `uploadFile` sends. */
export interface UploadCapability {
  uploadFile(upload: {
    url: string;
    /** A mini program's temporary path, or a web `Blob`/`File`. */
    file: string | Blob;
    name?: string;
    kind?: "image" | "video" | "audio";
    formData: Record<string, string>;
    headers: Record<string, string>;
    onProgress?: (progress: UploadProgress) => void;
  }): Promise<{ status: number; data: unknown }>;
}

/** The `socket` capability: a WebSocket, through the platform's `connectSocket`. */
export interface SocketCapability {
  connectSocket(options: { url: string }): {
    send(text: string): void;
    close(code?: number, reason?: string): void;
    onOpen(fn: () => void): void;
    onMessage(fn: (text: string) => void): void;
    onClose(fn: (code: number, reason: string) => void): void;
  };
}

/**
 * The `payment` capability (WeChat: `wx.requestPayment` for `wechat` orders; Alipay:
 * `my.tradePay` for `alipay` orders): the payment sheet for the `payment` the server made with
 * an order of `provider`. Resolves on the platform's "ok" (Alipay: `resultCode` 9000, or 8000
 * and 6004, which the server is asked about too); rejects with `CloudError`
 * `payment_cancelled` (the user closed the sheet; Alipay's 6001), `payment_failed`, or
 * `payment_not_supported` for an order of another provider than the platform's.
 */
export interface PaymentCapability {
  requestPayment(payment: WechatPayment | AlipayPayment, provider?: string): Promise<void>;
}

export interface UploadProgress {
  /** 0 to 100. */
  progress: number;
  sent: number;
  total: number;
}

/**
 * A platform, as the methods of its capabilities. The client refuses a call that needs a method
 * the adapter lacks with `CloudError` `unsupported_on_platform`.
 */
export interface Adapter
  extends RequestCapability,
    StorageCapability,
    LoginCapability,
    Partial<SubscribeCapability>,
    Partial<UploadCapability>,
    Partial<SocketCapability>,
    Partial<PaymentCapability> {
  name: string;
}

export interface User {
  id: string;
  created_at: string;
  last_login_at: string;
  email: string | null;
  phone: string | null;
  profile: Record<string, unknown>;
}

export type Record_ = {
  id: string;
  created_at: string;
  updated_at: string;
  owner: string | null;
  [field: string]: unknown;
};

export interface Page<T = Record_> {
  items: T[];
  next_cursor: string | null;
  total?: number;
  /** With `fileUrls()`: by file id, a signed URL (absolute), or null for a file gone. */
  file_urls?: Record<string, { url: string; expires_at: string } | null>;
  /** The page after this one, or null on the last page. */
  next: (() => Promise<Page<T>>) | null;
}

export type Operator = "=" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~" | "in";
export type Value = string | number | boolean | null | Date;

export interface Query<T = Record_> {
  where(field: string, op: Operator, value: Value | Value[]): Query<T>;
  where(field: string, value: Value): Query<T>;
  where(fields: Record<string, Value>): Query<T>;
  /** A filter in the language itself (docs/data.md); you quote its values. */
  filter(text: string): Query<T>;
  orderBy(field: string, direction?: "asc" | "desc"): Query<T>;
  limit(n: number): Query<T>;
  paginate(page: number, size?: number): Query<T>;
  fields(...names: string[]): Query<T>;
  expand(...names: string[]): Query<T>;
  /** Sign the files the page's `file` fields hold (or their `thumb`nails): `page.file_urls`. */
  fileUrls(thumb?: string): Query<T>;
  get(): Promise<Page<T>>;
  count(): Promise<number>;
  /** Watches the records the query's filter matches, live (`cloud.realtime.watch`). */
  watch(onChange: (change: Change<T>) => void, options?: WatchOptions): Watching;
}

/** A change a watch sees: `leave` and `delete` carry no record. */
export interface Change<T = Record_> {
  event: "create" | "update" | "delete" | "leave";
  id: string;
  record: T | null;
  /** The change's number within the watch (from 1, again after a reset). */
  seq: number;
}

export interface WatchOptions {
  /** A filter in the language of docs/data.md. */
  filter?: string;
  onError?: (error: CloudError) => void;
  /** Changes were missed that the server no longer holds (`history`: a client gone more than
   * 8 days or 10,000 events): list again. After an ordinary reconnect the missed changes come
   * instead, in order, once. */
  onReset?: (reason: string) => void;
}

export interface Watching {
  /** Resolves once the server has started the subscription: changes from then on arrive. */
  ready: Promise<void>;
  close(): void;
}

/** A channel's or a user's message. */
export interface RealtimeMessage<D = unknown> {
  data: D;
  /** The user who sent it; "anonymous" from a socket without a login; null for the server (functions, the admin API). */
  from: string | null;
  /** Its number in the channel (or the user's direct messages). */
  seq: number;
}

export interface PresenceMember<S = Record_> {
  member: string;
  user: string | null;
  state: S;
}

export type PresenceDiff<S = Record_> = { join: PresenceMember<S> } | { leave: { member: string } };

export interface PresencePage<S = Record_> {
  count: number;
  members: PresenceMember<S>[];
  next: string | null;
}

export interface Channel<D = unknown> extends Watching {
  on(event: "message", listener: (message: RealtimeMessage<D>) => void): Channel<D>;
  on(event: "presence", listener: (diff: PresenceDiff) => void): Channel<D>;
  publish(data: D): Promise<{ seq: number }>;
  /** Be present in the channel with a state (a JSON object of at most 1 KiB). */
  track(state: Record_): Promise<void>;
  untrack(): Promise<void>;
  presence(options?: { after?: string; limit?: number }): Promise<PresencePage>;
}

export interface Collection<T = Record_> extends Omit<Query<T>, "get"> {
  add(data: Partial<T>): Promise<T>;
  get(id: string): Promise<T>;
  update(id: string, data: Partial<T>): Promise<T>;
  remove(id: string): Promise<null>;
  list(): Promise<Page<T>>;
}

export interface Client {
  readonly server: string;
  readonly app: string;
  readonly adapter: Adapter;
  auth: {
    /** The platform's login (wx.login, my.getAuthCode, tt.login, qq.login). */
    login(): Promise<User>;
    loginWithPassword(email: string, password: string): Promise<User>;
    signUp(email: string, password: string): Promise<User>;
    loginAnonymously(): Promise<User>;
    loginForDevelopment(user: string): Promise<User>;
    logout(): Promise<void>;
    user(): Promise<User>;
    session(): { user: User; expires_at: number } | null;
    isLoggedIn(): boolean;
  };
  db: { collection<T = Record_>(name: string): Collection<T> };
  functions: { call<R = unknown>(name: string, data?: unknown): Promise<R> };
  messages: {
    /**
     * WeChat's `wx.requestSubscribeMessage` for 1 to 3 templates (from a tap or after a
     * payment), its answers reported so that each "accept" allows one message. Other platforms
     * reject with `unsupported_on_platform`.
     */
    requestSubscribe(
      templateIds: string[],
      options?: { provider?: string },
    ): Promise<{ answers: Record<string, SubscribeAnswer>; grants: Grant[] }>;
    /** What may still be sent to the user, per mini program and template. */
    grants(): Promise<Grant[]>;
  };
  realtime: {
    /** Watches a collection over the client's one shared socket. */
    watch<T = Record_>(collection: string, onChange: (change: Change<T>) => void, options?: WatchOptions): Watching;
    /** Joins a channel; after a reconnect it carries on where it left off. */
    channel<D = unknown>(
      name: string,
      options?: { presence?: boolean; onError?: (error: CloudError) => void; onReset?: (reason: string) => void },
    ): Channel<D>;
    /** Listens to the user's direct messages. */
    onMessage<D = unknown>(
      listener: (message: RealtimeMessage<D>) => void,
      options?: { onError?: (error: CloudError) => void; onReset?: (reason: string) => void },
    ): Watching;
    /** A direct message to a user, where the app's `direct` rule allows it. */
    send(to: string, data: unknown): Promise<void>;
    /** Publishes to a channel without joining it. */
    publish(channel: string, data: unknown): Promise<{ seq: number }>;
    /** Closes the socket and every watch. */
    close(): void;
  };
  pay: {
    /**
     * Orders and pays: `{ data, key }` has the app's `{"pay": ["before"]}` function price an
     * order (the same `key` again is the same order, with fresh payment parameters),
     * `{ function, data }` calls a function that answers one (`ctx.pay.createOrder`); the
     * server decides the provider. Then the sheet (`wx.requestPayment` for a `wechat` order,
     * `my.tradePay` for an `alipay` one), then the server is asked (`POST …/confirm`, again a
     * few times while it says `created`; `confirm: false`: the order as the server has it).
     * Answers the order: check `state === "paid"`. Rejects with `payment_cancelled` or
     * `payment_failed` (with `order_id`; the order stays payable), and with
     * `payment_not_supported` on platforms other than WeChat and Alipay (before ordering) or for
     * an order of the other platform's provider (with `order_id`).
     */
    request<M = Record<string, unknown>>(options: PayRequest): Promise<Order<M>>;
    /** One of the user's orders. */
    order<M = Record<string, unknown>>(id: string): Promise<Order<M>>;
    /** Has the server ask the payment platform about the order; answers it as it then is. */
    confirm<M = Record<string, unknown>>(id: string): Promise<Order<M>>;
  };
  files: {
    /**
     * Uploads a file (a mini program's temporary path, or a web `Blob`/`File`) into a bucket
     * through the platform's `uploadFile`; its type is sniffed from its bytes by the server.
     */
    upload(
      bucket: string,
      file: string | Blob,
      options?: {
        name?: string;
        metadata?: Record<string, unknown>;
        kind?: "image" | "video" | "audio";
        onProgress?: (progress: UploadProgress) => void;
      },
    ): Promise<FileInfo>;
    /** Signed URLs for `<image src>`, in one call; `null` for a file the user may not view. */
    urls(ids: string[], options?: { ttl?: number; thumb?: string }): Promise<(SignedUrl | null)[]>;
    /** The plain URL of a file (or of its `thumb`nail) of a public bucket. */
    url(bucket: string, id: string, options?: { thumb?: string }): string;
    info(bucket: string, id: string): Promise<FileInfo>;
    list(
      bucket: string,
      options?: { mine?: boolean; limit?: number; cursor?: string },
    ): Promise<{ items: FileInfo[]; next_cursor: string | null }>;
    remove(bucket: string, id: string): Promise<null>;
  };
}

export interface FileInfo {
  id: string;
  bucket: string;
  owner: string | null;
  name: string;
  /** Sniffed from the bytes. */
  type: string;
  size: number;
  sha256: string;
  metadata: Record<string, unknown>;
  created_at: string;
  /** In a bucket anyone may view: its plain URL needs no token. */
  public: boolean;
}

export interface SignedUrl {
  id: string;
  /** Absolute: the server's URL and the signed path. */
  url: string;
  expires_at: string;
}

/** What `cloud.pay.request` takes: an order priced by the app's `before` function, or one a
 * function makes. */
export type PayRequest =
  | { data?: unknown; key?: string; function?: undefined; confirm?: boolean }
  | { function: string; data?: unknown; key?: undefined; confirm?: boolean };

/** What `my.tradePay` takes: the trade the server created with Alipay. */
export interface AlipayPayment {
  tradeNO: string;
}

/** What `wx.requestPayment` takes, signed by the server. */
export interface WechatPayment {
  timeStamp: string;
  nonceStr: string;
  package: string;
  signType: string;
  paySign: string;
}

export interface Order<M = Record<string, unknown>> {
  id: string;
  /** `wechat` or `alipay`: which platform's sheet pays it. */
  provider: "wechat" | "alipay";
  out_trade_no: string;
  user_id: string | null;
  /** Integer fen (0.01 yuan). */
  amount_fen: number;
  description: string;
  metadata: M;
  state: "created" | "paid" | "partly_refunded" | "refunded" | "closed";
  refunded_fen: number;
  transaction_id: string | null;
  expires_at: string;
  paid_at: string | null;
  created_at: string;
  /** While the order may be paid, as it is created: what `wx.requestPayment` takes (a `wechat`
   * order) or `my.tradePay` (an `alipay` one). */
  payment?: WechatPayment | AlipayPayment;
}

export type SubscribeAnswer = "accept" | "reject" | "ban" | "filter";

export interface Grant {
  appid: string;
  template_id: string;
  remaining: number;
  updated_at: string;
}

export declare function createClient(options: ClientOptions): Client;

/**
 * Adds a namespace, `cloud[name] = build(cloud)`, to every client created afterwards: how the
 * SDK's own namespaces are made (docs/sdk.md, "Extending the SDK"). Throws `CloudError`
 * `invalid_feature` when a feature of that name is already registered (and `createClient` does,
 * when the name is one a client already has, such as `server`).
 */
export declare function registerFeature<T>(name: string, build: (client: Client) => T): void;

/** A value as a literal of the filter language, quoted so that it stays a value. */
export declare function literal(value: Value): string;

export declare class CloudError extends Error {
  /** The server's stable error code (`record_not_found`, …), or `network_error`. */
  code: string;
  /** The HTTP status, 0 when the request did not get an answer. */
  status: number;
  /** The `x-request-id` of the request, to find it in the server's log. */
  request_id: string | null;
  /** The same as `request_id`. */
  requestId: string | null;
  /** From `cloud.pay.request` once its order exists (`payment_cancelled`, …): the order's id. */
  order_id?: string;
  /** The same as `order_id`. */
  orderId?: string;
}
