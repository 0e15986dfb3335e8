// The Cloudlet web console: every view, its words in two languages (zh-CN and English), the
// hash router and the calls to the console API (`/console/api/…`) and the admin API
// (`/v1/admin/…`) on the same origin. Plain DOM: no framework, nothing inline (the page is
// served under a strict CSP), no innerHTML. The session is an HttpOnly cookie; the CSRF token
// lives in a module variable only; localStorage holds the chosen language and nothing else.
//
// Routes: #/login, #/apps, #/apps/{name}, #/people, #/audit.
//
// data-test attributes (for the end-to-end test, crates/console/e2e/):
//   header:  nav-apps, nav-people, nav-audit, whoami, logout, lang (also id="lang")
//   common:  page-title (the h1), error (an error banner: data-code holds error.code),
//            notice (a success message)
//   login:   login-page, setup-form, setup-token, setup-email, setup-name, setup-password,
//            setup-submit, login-form, login-email, login-password, login-submit
//   apps:    apps-page, apps-table, app-row (data-app, data-role), app-link (data-app),
//            app-role, create-app-form, new-app-name, new-app-submit
//   secret:  secret-box, secret-key (its text is the key), copy-secret, secret-done
//   app:     app-page, app-details, app-role, app-created, key-hint, key-created, collections,
//            collection-row (data-collection), rotate-key, rotate-confirm, rotate-cancel,
//            delete-app, delete-app-name, delete-app-confirm, delete-app-cancel
//   people:  people-page, people-table, person-row (data-email, data-id), instance-role,
//            person-app-role (data-app, data-role), revoke-role (data-app), grant-app,
//            grant-role, grant-submit, delete-person, delete-person-confirm,
//            add-person-form, person-email, person-name, person-password, person-role,
//            person-submit
//   audit:   audit-page, audit-app (the app filter), audit-table, audit-row (data-seq),
//            audit-actor, audit-entry-app, audit-action, audit-status, audit-older

// ---------------------------------------------------------------------------------------------
// Words

const WORDS = {
  en: {
    'app.name': 'Cloudlet console',
    'nav.label': 'Main',
    'nav.apps': 'Apps',
    'nav.people': 'People',
    'nav.audit': 'Audit log',
    'header.logout': 'Log out',
    'header.language': 'Language',
    loading: 'Loading…',
    cancel: 'Cancel',
    retry: 'Try again',
    'err.network': 'The server could not be reached.',
    'err.code': 'code',
    'err.request': 'request',
    'notFound.title': 'Not found',
    'notFound.text': 'There is no such page.',
    'field.email': 'Email',
    'field.name': 'Name',
    'field.password': 'Password',
    'field.passwordHint': 'At least 10 characters, and not a common password.',
    'login.title': 'Sign in',
    'login.submit': 'Sign in',
    'setup.title': 'Create the first owner',
    'setup.intro':
      'Nobody can sign in to this console yet. Create its first instance owner with the admin token the server was started with.',
    'setup.token': 'Admin token',
    'setup.submit': 'Create the owner and sign in',
    'role.owner': 'Owner',
    'role.developer': 'Developer',
    'role.viewer': 'Viewer',
    'role.member': 'Member',
    'apps.title': 'Apps',
    'apps.name': 'Name',
    'apps.role': 'Your role',
    'apps.created': 'Created',
    'apps.empty': 'No apps yet.',
    'apps.emptyMember': 'You have no role on any app yet. An instance owner can give you one.',
    'apps.create': 'Create an app',
    'apps.newName': 'App name',
    'apps.nameHint': '2 to 40 characters: a–z, 0–9 and -, starting and ending with a letter or digit.',
    'apps.badName': 'That is not a valid app name.',
    'apps.createSubmit': 'Create app',
    'secret.created': 'The secret key of {app}',
    'secret.rotated': 'The new secret key of {app}',
    'secret.warning':
      'This key is shown only once. Copy it now and keep it somewhere safe: whoever holds it can administer the app.',
    'secret.copy': 'Copy',
    'secret.copied': 'Copied.',
    'secret.copyFailed': 'Could not copy: the key is selected, press Ctrl+C (⌘C).',
    'secret.done': 'I have stored it',
    'app.back': 'All apps',
    'app.details': 'Details',
    'app.created': 'Created',
    'app.keyHint': 'Secret key starts with',
    'app.keyCreated': 'Key created',
    'app.collections': 'Collections',
    'app.collection': 'Collection',
    'app.fields': 'Fields',
    'app.noCollections': 'No collections yet.',
    'app.key': 'Secret key',
    'app.rotate': 'Rotate the secret key',
    'app.rotateWarning':
      'The current key stops working at once: everything that uses it needs the new one.',
    'app.rotateConfirm': 'Rotate now',
    'app.delete': 'Delete the app',
    'app.deleteSection': 'Delete',
    'app.deleteWarning':
      'This deletes the app with all its data and cannot be undone. Type the name of the app to confirm.',
    'app.deleteName': 'Name of the app',
    'app.deleteConfirm': 'Delete this app for ever',
    'people.title': 'People',
    'people.instanceRole': 'Instance role',
    'people.apps': 'Roles on apps',
    'people.setRole': 'Give a role',
    'people.actions': 'Actions',
    'people.none': 'None',
    'people.you': '(you)',
    'people.remove': 'Remove',
    'people.removeLabel': 'Remove the role on {app}',
    'people.grantApp': 'App',
    'people.grantRole': 'Role',
    'people.grant': 'Set',
    'people.noApps': 'No apps yet.',
    'people.delete': 'Delete',
    'people.deleteQuestion': 'Delete {email}?',
    'people.deleteYes': 'Yes, delete',
    'people.add': 'Add a person',
    'people.addSubmit': 'Add person',
    'people.added': '{email} was added.',
    'audit.title': 'Audit log',
    'audit.filter': 'App',
    'audit.allApps': 'All apps',
    'audit.seq': '#',
    'audit.at': 'Time',
    'audit.actor': 'Who',
    'audit.app': 'App',
    'audit.action': 'Action',
    'audit.status': 'Status',
    'audit.older': 'Older entries',
    'audit.empty': 'Nothing recorded yet.',
  },
  'zh-CN': {
    'app.name': 'Cloudlet 控制台',
    'nav.label': '主导航',
    'nav.apps': '应用',
    'nav.people': '人员',
    'nav.audit': '审计日志',
    'header.logout': '退出登录',
    'header.language': '语言',
    loading: '加载中…',
    cancel: '取消',
    retry: '重试',
    'err.network': '无法连接到服务器。',
    'err.code': '错误代码',
    'err.request': '请求',
    'notFound.title': '未找到',
    'notFound.text': '没有这个页面。',
    'field.email': '邮箱',
    'field.name': '姓名',
    'field.password': '密码',
    'field.passwordHint': '至少 10 个字符，且不能是常见密码。',
    'login.title': '登录',
    'login.submit': '登录',
    'setup.title': '创建第一位所有者',
    'setup.intro': '目前还没有人能登录此控制台。请使用启动服务器时设置的管理员令牌，创建第一位实例所有者。',
    'setup.token': '管理员令牌',
    'setup.submit': '创建所有者并登录',
    'role.owner': '所有者',
    'role.developer': '开发者',
    'role.viewer': '查看者',
    'role.member': '成员',
    'apps.title': '应用',
    'apps.name': '名称',
    'apps.role': '你的角色',
    'apps.created': '创建时间',
    'apps.empty': '还没有应用。',
    'apps.emptyMember': '你还没有任何应用的角色，实例所有者可以为你分配。',
    'apps.create': '创建应用',
    'apps.newName': '应用名称',
    'apps.nameHint': '2 到 40 个字符：a–z、0–9 和 -，以字母或数字开头和结尾。',
    'apps.badName': '应用名称不符合要求。',
    'apps.createSubmit': '创建应用',
    'secret.created': '{app} 的密钥',
    'secret.rotated': '{app} 的新密钥',
    'secret.warning': '此密钥只显示这一次。请立即复制并妥善保存：持有它的人可以管理该应用。',
    'secret.copy': '复制',
    'secret.copied': '已复制。',
    'secret.copyFailed': '无法自动复制：密钥已选中，请按 Ctrl+C（⌘C）。',
    'secret.done': '我已保存',
    'app.back': '全部应用',
    'app.details': '详情',
    'app.created': '创建时间',
    'app.keyHint': '密钥开头',
    'app.keyCreated': '密钥创建时间',
    'app.collections': '集合',
    'app.collection': '集合',
    'app.fields': '字段数',
    'app.noCollections': '还没有集合。',
    'app.key': '密钥',
    'app.rotate': '轮换密钥',
    'app.rotateWarning': '当前密钥会立即失效：所有使用它的地方都需要换成新密钥。',
    'app.rotateConfirm': '立即轮换',
    'app.delete': '删除应用',
    'app.deleteSection': '删除',
    'app.deleteWarning': '这会删除该应用及其全部数据，且无法撤销。请输入应用名称以确认。',
    'app.deleteName': '应用名称',
    'app.deleteConfirm': '永久删除此应用',
    'people.title': '人员',
    'people.instanceRole': '实例角色',
    'people.apps': '应用角色',
    'people.setRole': '分配角色',
    'people.actions': '操作',
    'people.none': '无',
    'people.you': '（你）',
    'people.remove': '移除',
    'people.removeLabel': '移除在 {app} 上的角色',
    'people.grantApp': '应用',
    'people.grantRole': '角色',
    'people.grant': '设置',
    'people.noApps': '还没有应用。',
    'people.delete': '删除',
    'people.deleteQuestion': '确定删除 {email}？',
    'people.deleteYes': '确定删除',
    'people.add': '添加人员',
    'people.addSubmit': '添加',
    'people.added': '已添加 {email}。',
    'audit.title': '审计日志',
    'audit.filter': '应用',
    'audit.allApps': '全部应用',
    'audit.seq': '序号',
    'audit.at': '时间',
    'audit.actor': '操作者',
    'audit.app': '应用',
    'audit.action': '操作',
    'audit.status': '状态',
    'audit.older': '更早的记录',
    'audit.empty': '还没有记录。',
  },
};

/** Each language named in itself, as language pickers do (so not translated). */
const LANGUAGE_NAMES = { en: 'English', 'zh-CN': '中文' };
const LANG_KEY = 'cloudlet.console.lang';
const APP_ROLES = ['owner', 'developer', 'viewer'];
const INSTANCE_ROLES = ['member', 'owner'];
const APP_NAME = /^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$/;

let lang = initialLanguage();

function initialLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    // Storage may be off; the browser's languages decide then.
  }
  if (saved && WORDS[saved]) return saved;
  const wanted = navigator.languages?.length ? navigator.languages : [navigator.language || 'en'];
  return wanted.some((l) => /^zh\b/i.test(l)) ? 'zh-CN' : 'en';
}

function setLanguage(next) {
  lang = WORDS[next] ? next : 'en';
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch {
    // Not kept; it still applies to this page.
  }
  render();
}

/** The words for `key` in the chosen language, with `{name}` replaced from `vars`. */
function t(key, vars = {}) {
  const text = WORDS[lang][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

// ---------------------------------------------------------------------------------------------
// DOM

/**
 * An element: `attrs` become attributes, except functions under `on…` (event listeners) and
 * `value`, `checked`, `disabled`, `hidden`, `selected` (properties). Children are nodes or text
 * (null, undefined and false are skipped; arrays are flattened). Never parses HTML.
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected'].includes(key)) {
      el[key] = value;
    } else if (key !== 'style') {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return append(el, ...children);
}

/** Appends nodes or text to `el` (skipping null, undefined and false; flattening arrays). */
function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An empty box whose content is replaced later (a list that loads, a form's message). */
function slot(attrs = {}) {
  const el = h('div', attrs);
  el.set = (...children) => {
    el.replaceChildren();
    append(el, ...children);
  };
  return el;
}

function loading() {
  return h('p', { class: 'muted', role: 'status' }, t('loading'));
}

function errorBanner(error) {
  const code = error?.code;
  return h(
    'div',
    { class: 'banner banner-error', role: 'alert', 'data-test': 'error', 'data-code': code },
    h('strong', {}, error?.message || String(error)),
    code ? h('span', { class: 'banner-meta' }, `${t('err.code')}: `, h('code', {}, code)) : null,
    error?.requestId
      ? h('span', { class: 'banner-meta' }, `${t('err.request')}: `, h('code', {}, error.requestId))
      : null,
  );
}

function notice(text) {
  return h('div', { class: 'banner banner-ok', role: 'status', 'data-test': 'notice' }, text);
}

/** A labelled input: `<label for>` and the input (with a hint under it, if any). */
function field(id, label, attrs = {}, hint = null) {
  const hintId = hint ? `${id}-hint` : null;
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, 'aria-describedby': hintId, ...attrs }),
    hint ? h('small', { id: hintId, class: 'muted' }, hint) : null,
  );
}

function selectField(id, label, options, attrs = {}) {
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h('select', { id, name: id, ...attrs }, options),
  );
}

function option(value, label, selected = false) {
  return h('option', { value, selected }, label);
}

function roleOptions(roles, selected) {
  return roles.map((role) => option(role, t(`role.${role}`), role === selected));
}

function table(attrs, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      attrs,
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows),
    ),
  );
}

function time(iso) {
  return h('time', { datetime: iso, title: iso }, formatTime(iso));
}

/**
 * Runs `work` with the form's buttons disabled, showing its error in `message` (a slot).
 * Returns what `work` returned, or undefined when it failed.
 */
async function busy(form, message, work) {
  const buttons = [...form.querySelectorAll('button')];
  buttons.forEach((b) => (b.disabled = true));
  message?.set();
  try {
    return await work();
  } catch (error) {
    message?.set(errorBanner(error));
    return undefined;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function onSubmit(handler) {
  return (event) => {
    event.preventDefault();
    handler(event.currentTarget);
  };
}

function setTitle(text) {
  document.title = `${text} · Cloudlet`;
  return h('h1', { 'data-test': 'page-title' }, text);
}

// ---------------------------------------------------------------------------------------------
// Server

let csrf = null;
let me = null;
let setupNeeded = false;
/** A secret key just made, shown until the person leaves the page: { app, key, rotated }. */
let revealed = null;

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

/**
 * Calls the server: JSON in, JSON out (null for an empty answer). Non-GET requests carry the
 * CSRF header; a `csrf_failed` is retried once with a fresh token. Throws ApiError.
 */
async function api(method, url, body, retried = false) {
  const headers = { accept: 'application/json' };
  const init = { method, credentials: 'same-origin', headers };
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    if (csrf) headers['x-cloudlet-csrf'] = csrf;
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'network', t('err.network'));
  }
  const text = await response.text().catch(() => '');
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const error = data?.error ?? {};
  const failure = new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? (response.statusText || `HTTP ${response.status}`),
    error.request_id,
  );
  if (response.status === 401 && failure.code === 'console_login_required') signedOut();
  if (failure.code === 'csrf_failed' && !retried && method !== 'GET') {
    await loadState();
    // Signed out meanwhile: only the console's own calls (login, setup) are worth another try.
    if (me || url.startsWith('/console/')) return api(method, url, body, true);
  }
  throw failure;
}

async function loadState() {
  const state = await api('GET', '/console/api/state');
  setupNeeded = Boolean(state?.setup_needed);
  me = state?.person ?? null;
  csrf = state?.csrf ?? null;
}

function signedIn(answer) {
  me = answer.person;
  csrf = answer.csrf;
  setupNeeded = false;
  go('#/apps');
}

function signedOut() {
  const was = me;
  me = null;
  revealed = null;
  if (was || location.hash !== '#/login') go('#/login');
}

const isOwner = () => me?.instance_role === 'owner';
const path = (...parts) => parts.map(encodeURIComponent).join('/');

// ---------------------------------------------------------------------------------------------
// Router and frame

const root = document.getElementById('root');

function route() {
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['?'];
  }
  return { page: parts[0] ?? '', arg: parts[1] ?? null, extra: parts.length > 2 };
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function render() {
  document.documentElement.lang = lang;
  const { page, arg, extra } = route();
  if (!me && page !== 'login') return go('#/login');
  if (me && (page === 'login' || page === '')) return go('#/apps');
  const main = h('main', { id: 'main', class: 'main' });
  root.replaceChildren(header(page), main);
  if (extra) return notFound(main);
  if (page === 'login') return pageLogin(main);
  if (page === 'apps' && arg) return pageApp(main, arg);
  if (page === 'apps') return pageApps(main);
  if (page === 'people' && !arg) return pagePeople(main);
  if (page === 'audit' && !arg) return pageAudit(main);
  return notFound(main);
}

function header(page) {
  const link = (target, key, test) =>
    h('a', { href: `#/${target}`, 'data-test': test, 'aria-current': page === target ? 'page' : null }, t(key));
  const nav = me
    ? h(
        'nav',
        { class: 'nav', 'aria-label': t('nav.label') },
        link('apps', 'nav.apps', 'nav-apps'),
        isOwner() ? link('people', 'nav.people', 'nav-people') : null,
        link('audit', 'nav.audit', 'nav-audit'),
      )
    : null;
  const who = me
    ? h(
        'span',
        { class: 'whoami', 'data-test': 'whoami', title: me.email },
        h('span', { class: 'whoami-name' }, me.name || me.email),
        me.name ? h('span', { class: 'muted whoami-email' }, me.email) : null,
      )
    : null;
  const logout = me
    ? h('button', { type: 'button', class: 'button-quiet', 'data-test': 'logout', onclick: logOut }, t('header.logout'))
    : null;
  const languages = h(
    'span',
    { class: 'lang' },
    h('label', { for: 'lang', class: 'visually-hidden' }, t('header.language')),
    h(
      'select',
      { id: 'lang', 'data-test': 'lang', onchange: (e) => setLanguage(e.target.value) },
      Object.entries(LANGUAGE_NAMES).map(([code, name]) => option(code, name, code === lang)),
    ),
  );
  return h(
    'header',
    { class: 'header' },
    h('a', { class: 'brand', href: me ? '#/apps' : '#/login', 'aria-label': t('app.name') }, 'Cloudlet'),
    nav,
    h('div', { class: 'header-end' }, who, logout, languages),
  );
}

async function logOut(event) {
  event.currentTarget.disabled = true;
  try {
    await api('POST', '/console/api/logout', {});
  } catch {
    // Signed out here whatever the server said; a stale cookie gets a 401 next time.
  }
  me = null;
  csrf = null;
  revealed = null;
  try {
    await loadState();
  } catch {
    // The login page still shows; its own requests will say what is wrong.
  }
  go('#/login');
}

function notFound(main) {
  append(main, setTitle(t('notFound.title')), h('p', {}, t('notFound.text')));
}

// ---------------------------------------------------------------------------------------------
// Login and first-owner setup

function pageLogin(main) {
  main.setAttribute('data-test', 'login-page');
  main.classList.add('narrow');
  append(main, setupNeeded ? setupForm() : loginForm());
}

function setupForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const answer = await api('POST', '/console/api/setup', {
        admin_token: form.elements['setup-token'].value,
        email: form.elements['setup-email'].value.trim(),
        name: form.elements['setup-name'].value.trim(),
        password: form.elements['setup-password'].value,
      });
      signedIn(answer);
    });
  return h(
    'form',
    { class: 'card stack', 'data-test': 'setup-form', onsubmit: onSubmit(submit) },
    setTitle(t('setup.title')),
    h('p', { class: 'muted' }, t('setup.intro')),
    message,
    field('setup-token', t('setup.token'), { type: 'password', required: true, autocomplete: 'off', 'data-test': 'setup-token' }),
    field('setup-email', t('field.email'), { type: 'email', required: true, autocomplete: 'username', 'data-test': 'setup-email' }),
    field('setup-name', t('field.name'), { required: true, autocomplete: 'name', 'data-test': 'setup-name' }),
    field(
      'setup-password',
      t('field.password'),
      { type: 'password', required: true, autocomplete: 'new-password', 'data-test': 'setup-password' },
      t('field.passwordHint'),
    ),
    h('button', { type: 'submit', class: 'button-primary', 'data-test': 'setup-submit' }, t('setup.submit')),
  );
}

function loginForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const answer = await api('POST', '/console/api/login', {
        email: form.elements['login-email'].value.trim(),
        password: form.elements['login-password'].value,
      });
      signedIn(answer);
    });
  return h(
    'form',
    { class: 'card stack', 'data-test': 'login-form', onsubmit: onSubmit(submit) },
    setTitle(t('login.title')),
    message,
    field('login-email', t('field.email'), { type: 'email', required: true, autocomplete: 'username', 'data-test': 'login-email' }),
    field('login-password', t('field.password'), { type: 'password', required: true, autocomplete: 'current-password', 'data-test': 'login-password' }),
    h('button', { type: 'submit', class: 'button-primary', 'data-test': 'login-submit' }, t('login.submit')),
  );
}

// ---------------------------------------------------------------------------------------------
// Apps

function pageApps(main) {
  main.setAttribute('data-test', 'apps-page');
  const list = slot();
  list.set(loading());
  append(main, setTitle(t('apps.title')), revealed && !revealed.rotated ? secretBox() : null, list);
  if (isOwner()) main.append(createAppForm());
  api('GET', '/console/api/apps').then(
    (answer) => list.set(appsTable(answer?.items ?? [])),
    (error) => list.set(errorBanner(error)),
  );
}

function appsTable(apps) {
  if (!apps.length) return h('p', { class: 'muted' }, t(isOwner() ? 'apps.empty' : 'apps.emptyMember'));
  const rows = apps.map((app) =>
    h(
      'tr',
      { 'data-test': 'app-row', 'data-app': app.name, 'data-role': app.role },
      h('td', {}, h('a', { href: `#/apps/${path(app.name)}`, 'data-test': 'app-link', 'data-app': app.name }, app.name)),
      h('td', { 'data-test': 'app-role' }, roleBadge(app.role)),
      h('td', {}, time(app.created_at)),
    ),
  );
  return table({ 'data-test': 'apps-table' }, [t('apps.name'), t('apps.role'), t('apps.created')], rows);
}

function roleBadge(role) {
  return h('span', { class: `badge badge-${role}` }, t(`role.${role}`));
}

function createAppForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const name = form.elements['new-app-name'].value.trim();
      if (!APP_NAME.test(name)) throw new ApiError(0, null, t('apps.badName'));
      const answer = await api('POST', '/v1/admin/apps', { name });
      revealed = { app: answer.name, key: answer.secret_key, rotated: false };
      render();
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('apps.create')),
    h(
      'form',
      { class: 'inline-form', 'data-test': 'create-app-form', onsubmit: onSubmit(submit) },
      field(
        'new-app-name',
        t('apps.newName'),
        { required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 40, 'data-test': 'new-app-name' },
        t('apps.nameHint'),
      ),
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'new-app-submit' }, t('apps.createSubmit')),
    ),
    message,
  );
}

/** The secret key just made (`revealed`), once: selectable, with a copy button and a warning. */
function secretBox() {
  const { app, key, rotated } = revealed;
  const code = h('code', { class: 'secret-key', tabindex: '0', 'data-test': 'secret-key' }, key);
  code.addEventListener('focus', () => selectText(code));
  const status = h('span', { class: 'muted', role: 'status' });
  const copy = async () => {
    selectText(code);
    try {
      await navigator.clipboard.writeText(key);
      status.textContent = t('secret.copied');
    } catch {
      selectText(code);
      const copied = document.execCommand?.('copy');
      status.textContent = t(copied ? 'secret.copied' : 'secret.copyFailed');
    }
  };
  const done = () => {
    revealed = null;
    render();
  };
  return h(
    'section',
    { class: 'card secret-box', 'data-test': 'secret-box', 'aria-labelledby': 'secret-title' },
    h('h2', { id: 'secret-title' }, t(rotated ? 'secret.rotated' : 'secret.created', { app })),
    h('p', { class: 'warning' }, t('secret.warning')),
    code,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', 'data-test': 'copy-secret', onclick: copy }, t('secret.copy')),
      h('button', { type: 'button', class: 'button-quiet', 'data-test': 'secret-done', onclick: done }, t('secret.done')),
      status,
    ),
  );
}

function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// ---------------------------------------------------------------------------------------------
// One app

function pageApp(main, name) {
  main.setAttribute('data-test', 'app-page');
  const body = slot();
  body.set(loading());
  append(
    main,
    h('p', { class: 'crumb' }, h('a', { href: '#/apps' }, `← ${t('app.back')}`)),
    setTitle(name),
    revealed?.rotated && revealed.app === name ? secretBox() : null,
    body,
  );
  const app = `/v1/admin/apps/${path(name)}`;
  Promise.allSettled([api('GET', '/console/api/apps'), api('GET', app), api('GET', `${app}/collections`)]).then(
    ([apps, details, collections]) => {
      if (details.status === 'rejected') return body.set(errorBanner(details.reason));
      const mine = apps.value?.items?.find((a) => a.name === name);
      const role = isOwner() ? 'owner' : mine?.role ?? null;
      body.set(
        appDetails(details.value, role),
        collectionsSection(collections),
        role === 'owner' ? rotateSection(name) : null,
        isOwner() ? deleteSection(name) : null,
      );
    },
  );
}

function appDetails(app, role) {
  const row = (label, value, test) => [h('dt', {}, label), h('dd', { 'data-test': test }, value)];
  return h(
    'section',
    { class: 'card', 'data-test': 'app-details' },
    h('h2', {}, t('app.details')),
    h(
      'dl',
      { class: 'details' },
      role ? row(t('apps.role'), roleBadge(role), 'app-role') : null,
      row(t('app.created'), time(app.created_at), 'app-created'),
      row(t('app.keyHint'), h('code', {}, `${app.secret_key_hint ?? ''}…`), 'key-hint'),
      row(t('app.keyCreated'), time(app.secret_key_created_at), 'key-created'),
    ),
  );
}

function collectionsSection(result) {
  let content;
  if (result.status === 'rejected') content = errorBanner(result.reason);
  else {
    const items = Array.isArray(result.value) ? result.value : result.value?.items ?? [];
    content = items.length
      ? table(
          { 'data-test': 'collections' },
          [t('app.collection'), t('app.fields')],
          items.map((c) =>
            h(
              'tr',
              { 'data-test': 'collection-row', 'data-collection': c.name },
              h('td', {}, h('code', {}, c.name)),
              h('td', { class: 'num' }, fieldCount(c.fields)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'collections' }, t('app.noCollections'));
  }
  return h('section', { class: 'card' }, h('h2', {}, t('app.collections')), content);
}

function fieldCount(fields) {
  if (Array.isArray(fields)) return fields.length;
  if (fields && typeof fields === 'object') return Object.keys(fields).length;
  return '—';
}

/** Rotate the key: a button, then a confirmation with the warning. */
function rotateSection(name) {
  const message = slot();
  const area = slot();
  const ask = () =>
    area.set(
      h(
        'div',
        { class: 'confirm' },
        h('p', { class: 'warning' }, t('app.rotateWarning')),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'button', class: 'button-danger', 'data-test': 'rotate-confirm', onclick: rotate }, t('app.rotateConfirm')),
          h('button', { type: 'button', class: 'button-quiet', 'data-test': 'rotate-cancel', onclick: idle }, t('cancel')),
        ),
      ),
    );
  const idle = () =>
    area.set(h('button', { type: 'button', 'data-test': 'rotate-key', onclick: ask }, t('app.rotate')));
  const rotate = () =>
    busy(area, message, async () => {
      const answer = await api('POST', `/v1/admin/apps/${path(name)}/keys/rotate`, {});
      revealed = { app: name, key: answer.secret_key, rotated: true };
      render();
    });
  idle();
  return h('section', { class: 'card' }, h('h2', {}, t('app.key')), message, area);
}

/** Delete the app: a button, then the app's name to type before the final button works. */
function deleteSection(name) {
  const message = slot();
  const area = slot();
  const ask = () => {
    const confirm = h(
      'button',
      { type: 'submit', class: 'button-danger', disabled: true, 'data-test': 'delete-app-confirm' },
      t('app.deleteConfirm'),
    );
    const typed = (e) => (confirm.disabled = e.target.value !== name);
    const form = h(
      'form',
      { class: 'confirm stack', onsubmit: onSubmit(remove) },
      h('p', { class: 'warning' }, t('app.deleteWarning')),
      field('delete-app-name', t('app.deleteName'), {
        autocomplete: 'off',
        spellcheck: 'false',
        'data-test': 'delete-app-name',
        oninput: typed,
      }),
      h(
        'div',
        { class: 'actions' },
        confirm,
        h('button', { type: 'button', class: 'button-quiet', 'data-test': 'delete-app-cancel', onclick: idle }, t('cancel')),
      ),
    );
    area.set(form);
    form.elements['delete-app-name'].focus();
  };
  const idle = () =>
    area.set(h('button', { type: 'button', class: 'button-danger', 'data-test': 'delete-app', onclick: ask }, t('app.delete')));
  const remove = (form) => {
    if (form.elements['delete-app-name'].value !== name) return undefined;
    return busy(form, message, async () => {
      await api('DELETE', `/v1/admin/apps/${path(name)}`);
      revealed = null;
      go('#/apps');
    });
  };
  idle();
  return h('section', { class: 'card card-danger' }, h('h2', {}, t('app.deleteSection')), message, area);
}

// ---------------------------------------------------------------------------------------------
// People

function pagePeople(main) {
  main.setAttribute('data-test', 'people-page');
  const message = slot();
  const list = slot();
  list.set(loading());
  const reload = async () => {
    const [people, apps] = await Promise.allSettled([api('GET', '/console/api/people'), api('GET', '/console/api/apps')]);
    if (people.status === 'rejected') return list.set(errorBanner(people.reason));
    const appNames = (apps.value?.items ?? []).map((a) => a.name);
    return list.set(peopleTable(people.value?.items ?? [], appNames, message, reload));
  };
  append(main, setTitle(t('people.title')), message, list, addPersonForm(reload));
  reload();
}

function peopleTable(people, appNames, message, reload) {
  const rows = people.map((person) => personRow(person, appNames, message, reload));
  return table(
    { 'data-test': 'people-table' },
    [t('field.name'), t('field.email'), t('people.instanceRole'), t('people.apps'), t('people.setRole'), t('people.actions')],
    rows,
  );
}

function personRow(person, appNames, message, reload) {
  const base = `/console/api/people/${path(person.id)}`;
  /** Runs a change to this person, then shows the list again (or the error above it). */
  const change = (el, work) => busy(el, message, async () => {
    await work();
    await reload();
  });
  const roles = Object.entries(person.apps ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const roleList = roles.length
    ? h(
        'ul',
        { class: 'role-list' },
        roles.map(([app, role]) => {
          const item = h(
            'li',
            { 'data-test': 'person-app-role', 'data-app': app, 'data-role': role },
            h('code', {}, app),
            roleBadge(role),
            h(
              'button',
              {
                type: 'button',
                class: 'button-small button-quiet',
                'data-test': 'revoke-role',
                'data-app': app,
                'aria-label': t('people.removeLabel', { app }),
                onclick: () => change(item, () => api('DELETE', `${base}/apps/${path(app)}`)),
              },
              t('people.remove'),
            ),
          );
          return item;
        }),
      )
    : h('span', { class: 'muted' }, t('people.none'));
  const id = (what) => `${what}-${person.id}`;
  const grant = appNames.length
    ? h(
        'form',
        {
          class: 'grant',
          onsubmit: onSubmit((form) =>
            change(form, () =>
              api('PUT', `${base}/apps/${path(form.elements[id('app')].value)}`, { role: form.elements[id('role')].value }),
            ),
          ),
        },
        h('label', { for: id('app'), class: 'visually-hidden' }, t('people.grantApp')),
        h('select', { id: id('app'), 'data-test': 'grant-app' }, appNames.map((name) => option(name, name))),
        h('label', { for: id('role'), class: 'visually-hidden' }, t('people.grantRole')),
        h('select', { id: id('role'), 'data-test': 'grant-role' }, roleOptions(APP_ROLES, 'viewer')),
        h('button', { type: 'submit', class: 'button-small', 'data-test': 'grant-submit' }, t('people.grant')),
      )
    : h('span', { class: 'muted' }, t('people.noApps'));
  const actions = slot();
  const idle = () =>
    actions.set(
      h('button', { type: 'button', class: 'button-small button-danger', 'data-test': 'delete-person', onclick: ask }, t('people.delete')),
    );
  const ask = () =>
    actions.set(
      h('span', { class: 'muted' }, t('people.deleteQuestion', { email: person.email })),
      ' ',
      h(
        'button',
        {
          type: 'button',
          class: 'button-small button-danger',
          'data-test': 'delete-person-confirm',
          onclick: () => change(actions, () => api('DELETE', base)),
        },
        t('people.deleteYes'),
      ),
      ' ',
      h('button', { type: 'button', class: 'button-small button-quiet', onclick: idle }, t('cancel')),
    );
  idle();
  const self = me?.id === person.id;
  return h(
    'tr',
    { 'data-test': 'person-row', 'data-email': person.email, 'data-id': person.id },
    h('td', {}, person.name, self ? [' ', h('span', { class: 'muted nowrap' }, t('people.you'))] : null),
    h('td', {}, person.email),
    h('td', { 'data-test': 'instance-role' }, roleBadge(person.instance_role)),
    h('td', {}, roleList),
    h('td', {}, grant),
    h('td', {}, actions),
  );
}

function addPersonForm(reload) {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const email = form.elements['person-email'].value.trim();
      await api('POST', '/console/api/people', {
        email,
        name: form.elements['person-name'].value.trim(),
        password: form.elements['person-password'].value,
        instance_role: form.elements['person-role'].value,
      });
      form.reset();
      await reload();
      message.set(notice(t('people.added', { email })));
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('people.add')),
    message,
    h(
      'form',
      { class: 'grid-form', 'data-test': 'add-person-form', onsubmit: onSubmit(submit) },
      field('person-email', t('field.email'), { type: 'email', required: true, autocomplete: 'off', 'data-test': 'person-email' }),
      field('person-name', t('field.name'), { required: true, autocomplete: 'off', 'data-test': 'person-name' }),
      field(
        'person-password',
        t('field.password'),
        { type: 'password', required: true, autocomplete: 'new-password', 'data-test': 'person-password' },
        t('field.passwordHint'),
      ),
      selectField('person-role', t('people.instanceRole'), roleOptions(INSTANCE_ROLES, 'member'), { 'data-test': 'person-role' }),
      h('div', { class: 'field field-end' }, h('button', { type: 'submit', class: 'button-primary', 'data-test': 'person-submit' }, t('people.addSubmit'))),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Audit log

function pageAudit(main) {
  main.setAttribute('data-test', 'audit-page');
  const message = slot();
  const tbody = h('tbody', {});
  const empty = h('p', { class: 'muted', hidden: true }, t('audit.empty'));
  const older = h('button', { type: 'button', hidden: true, 'data-test': 'audit-older' }, t('audit.older'));
  const filter = h('select', { id: 'audit-app', 'data-test': 'audit-app' }, option('', t('audit.allApps')));
  const headers = ['audit.seq', 'audit.at', 'audit.actor', 'audit.app', 'audit.action', 'audit.status'];
  const auditTable = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { 'data-test': 'audit-table' },
      h('thead', {}, h('tr', {}, headers.map((key) => h('th', { scope: 'col' }, t(key))))),
      tbody,
    ),
  );
  let before = null;
  const load = async (fresh) => {
    if (fresh) {
      before = null;
      tbody.replaceChildren();
    }
    const query = new URLSearchParams({ limit: '50' });
    if (filter.value) query.set('app', filter.value);
    if (before !== null) query.set('before', String(before));
    older.disabled = true;
    message.set(fresh ? loading() : null);
    try {
      const answer = await api('GET', `/console/api/audit?${query}`);
      message.set();
      append(tbody, (answer?.items ?? []).map(auditRow));
      before = answer?.next_before ?? null;
    } catch (error) {
      message.set(errorBanner(error));
    }
    older.disabled = false;
    older.hidden = before === null;
    empty.hidden = tbody.children.length > 0;
  };
  filter.addEventListener('change', () => load(true));
  older.addEventListener('click', () => load(false));
  append(
    main,
    setTitle(t('audit.title')),
    h('div', { class: 'toolbar' }, h('label', { for: 'audit-app' }, t('audit.filter')), filter),
    message,
    auditTable,
    empty,
    h('div', { class: 'actions' }, older),
  );
  api('GET', '/console/api/apps').then(
    (answer) => append(filter, (answer?.items ?? []).map((a) => option(a.name, a.name))),
    () => {}, // The filter then offers only "all apps"; the log itself says what failed.
  );
  load(true);
}

function auditRow(entry) {
  const failed = Number(entry.status) >= 400;
  return h(
    'tr',
    { 'data-test': 'audit-row', 'data-seq': entry.seq },
    h('td', { class: 'num' }, entry.seq),
    h('td', {}, time(entry.at)),
    h('td', { 'data-test': 'audit-actor' }, entry.actor ?? '—'),
    h('td', { 'data-test': 'audit-entry-app' }, entry.app ? h('a', { href: `#/apps/${path(entry.app)}` }, entry.app) : '—'),
    h('td', { 'data-test': 'audit-action' }, h('code', {}, entry.action)),
    h('td', { class: `num ${failed ? 'status-bad' : 'status-ok'}`, 'data-test': 'audit-status' }, entry.status),
  );
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  document.documentElement.lang = lang;
  root.replaceChildren(h('main', { class: 'main' }, loading()));
  try {
    await loadState();
  } catch (error) {
    const again = h('button', { type: 'button', onclick: start }, t('retry'));
    root.replaceChildren(h('main', { class: 'main narrow' }, errorBanner(error), again));
    return;
  }
  window.addEventListener('hashchange', () => {
    revealed = null;
    render();
  });
  render();
}

start();
