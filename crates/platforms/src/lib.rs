//! Clients of the mini-program platforms' server APIs. Each platform has a module with its
//! protocol: endpoints, fields, error envelopes and crypto, as `shared/platforms.md` records
//! them. Nothing here stores anything or serves HTTP: the auth service in `cloudlet-core` calls
//! these clients, and the emulator (`cloudlet-emulator`) answers them locally.
//!
//! - [`wechat`]: `jscode2session`, `stable_token`, the phone number, subscribe messages,
//!   `encryptedData` decryption, the login-state signature.
//! - [`qq`]: QQ's clone of WeChat's `jscode2session`.
//! - [`douyin`]: Douyin's v2 `jscode2session` (with anonymous codes).
//! - [`alipay`]: the RSA2-signed gateway and `alipay.system.oauth.token`.
//! - [`wechat_pay`]: WeChat Pay API v3's request signatures, `paySign`, verifying replies and
//!   notifications, decrypting their resources.
//! - [`rsa2`]: SHA256withRSA keys and signatures, as Alipay and WeChat Pay use them.
//!
//! Every client takes a base URL, so that the emulator can stand in for the real servers.

pub mod alipay;
pub mod bill;
pub mod douyin;
mod error;
mod http;
pub mod qq;
pub mod rsa2;
pub mod wechat;
pub mod wechat_pay;

pub use error::PlatformError;
pub use http::PlatformHttp;
