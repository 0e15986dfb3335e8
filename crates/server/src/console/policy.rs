//! Which console role each route of the API needs, when a person calls it through the console's
//! address with their session. One table, read by the console's gate before any handler runs:
//! a route that is not in it is closed on the console's address (the gate answers 404), so a
//! route added later is closed there until somebody decides its role here.
//!
//! What a viewer sees of personal data: the app's settings, schemas, records, functions, queues'
//! depths and channels, but not its users and their sessions, function logs (which print what
//! functions were given), queued and realtime messages, subscribe messages, presence (who is
//! online, which sockets are open, which channels are live: their names may hold user ids) or
//! payments: those need a developer. The app's secret key may do everything to the
//! app, so only those who may delete it (instance owners) rotate it and see the new one; a
//! refund, which pays money out, needs the app's owner. Records are the app's data as its developers designed it; a collection of
//! personal data is as visible as the collection.

use axum::http::Method;
use cloudlet_core::console::AppRole;

/// What a route needs of the person calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The instance's owners only (creating, listing and deleting apps).
    InstanceOwner,
    /// At least this role on the app of the route's `{app}`.
    App(AppRole),
    /// Not served on the console's address: apps' pages (sites, HTTP functions), signed file
    /// URLs, the end users' own routes, and anything not decided.
    Closed,
}

const ADMIN_APP: &str = "/v1/admin/apps/{app}";
const APP: &str = "/v1/apps/{app}";

/// The need of `method` on the route whose template is `template`.
pub fn need(method: &Method, template: &str) -> Need {
    let read = *method == Method::GET || *method == Method::HEAD;
    if template == "/v1/admin/apps" {
        return Need::InstanceOwner;
    }
    if let Some(rest) = template.strip_prefix(ADMIN_APP) {
        return admin_route(read, method, rest);
    }
    if let Some(rest) = template.strip_prefix(APP) {
        return app_route(read, rest);
    }
    Need::Closed
}

/// Whether a route that takes a body changes nothing (checking a collection's definition, which
/// the console does as rules are typed): it needs its role, but is no change for the audit log.
pub fn changes_nothing(method: &Method, template: &str) -> bool {
    *method == Method::POST && template == "/v1/admin/apps/{app}/collections/{name}/check"
}

/// `/v1/admin/apps/{app}…`, by what follows the app.
fn admin_route(read: bool, method: &Method, rest: &str) -> Need {
    // Queue messages and realtime messages carry what the app's users sent.
    let personal = ["/users", "/sessions/", "/pay/", "/logs", "/messages"]
        .iter()
        .any(|prefix| rest.starts_with(prefix))
        || rest.ends_with("/presence")
        || rest.ends_with("/sockets")
        || rest.ends_with("/realtime/channels")
        || rest.contains("/messages");
    let secrets = rest.starts_with("/auth/providers/") || rest.starts_with("/pay/merchants/");
    match rest {
        "" if *method == Method::DELETE => Need::InstanceOwner,
        // The secret key may do everything to its app, delete it too, outside the audit log:
        // only those who may delete the app see a new one.
        "/keys/rotate" => Need::InstanceOwner,
        // Money leaves the merchant's account.
        _ if rest.ends_with("/refunds") && !read => Need::App(AppRole::Owner),
        _ if secrets && !read => Need::App(AppRole::Owner),
        _ if secrets || personal || !read => Need::App(AppRole::Developer),
        _ => Need::App(AppRole::Viewer),
    }
}

/// `/v1/apps/{app}…`: the console reads and edits records and files as an admin (no rules,
/// still validated) and invokes functions; the end users' own routes stay closed. A file's
/// bytes are safe to serve here: what is not a raster image, audio or video is an attachment,
/// every answer is `nosniff`, and the console's address sandboxes every answer but its page.
fn app_route(read: bool, rest: &str) -> Need {
    let data = [
        "/collections/{collection}/records",
        "/collections/{collection}/records/{id}",
        "/buckets/{bucket}/files",
        "/files/{bucket}",
        "/files/{bucket}/{file}",
        "/files/{bucket}/{file}/info",
    ];
    match rest {
        "/health" if read => Need::App(AppRole::Viewer),
        _ if data.contains(&rest) => {
            if read {
                Need::App(AppRole::Viewer)
            } else {
                Need::App(AppRole::Developer)
            }
        }
        "/batch" | "/functions/{name}" if !read => Need::App(AppRole::Developer),
        _ => Need::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the API, from its OpenAPI contract.
    fn every_route() -> Vec<(Method, String)> {
        let (_, contract) = crate::api(&crate::Config::default(), "http://127.0.0.1:8700");
        let mut routes = Vec::new();
        for (path, item) in &contract.paths.paths {
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::DELETE, item.delete.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    routes.push((method, path.clone()));
                }
            }
        }
        assert!(
            routes.len() > 90,
            "the contract lists {} routes",
            routes.len()
        );
        routes
    }

    #[test]
    fn every_route_is_closed_or_needs_a_role_and_writes_need_more_than_a_viewer() {
        for (method, path) in every_route() {
            let need = need(&method, &path);
            let read = method == Method::GET;
            match need {
                Need::Closed | Need::InstanceOwner => {}
                Need::App(role) => {
                    assert!(
                        path.contains("{app}"),
                        "{method} {path}: a role on which app?"
                    );
                    assert!(
                        read || role >= AppRole::Developer,
                        "{method} {path} changes something and a viewer may call it"
                    );
                }
            }
            if !path.contains("{app}") {
                assert!(
                    path == "/v1/admin/apps" || need == Need::Closed,
                    "{method} {path} is open on the console without an app"
                );
            }
        }
    }

    #[test]
    fn sites_http_functions_and_end_users_routes_are_closed() {
        for (method, path) in every_route() {
            let user_content = path.starts_with("/sites/")
                || path.contains("/file-urls")
                || path.contains("/http/")
                || path == "/v1/apps/{app}/realtime"
                || path.starts_with("/v1/apps/{app}/auth/")
                || path.starts_with("/v1/apps/{app}/pay/");
            if user_content {
                assert_eq!(need(&method, &path), Need::Closed, "{method} {path}");
            }
        }
    }

    #[test]
    fn personal_data_and_secrets_need_a_developer_or_an_owner() {
        let cases = [
            (
                Method::GET,
                "/v1/admin/apps/{app}/users/{user}/sessions",
                AppRole::Developer,
            ),
            (Method::GET, "/v1/admin/apps/{app}/logs", AppRole::Developer),
            (
                Method::GET,
                "/v1/admin/apps/{app}/users",
                AppRole::Developer,
            ),
            (
                Method::DELETE,
                "/v1/admin/apps/{app}/users/{user}",
                AppRole::Developer,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/pay/orders",
                AppRole::Developer,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/auth/providers/{provider}",
                AppRole::Developer,
            ),
            (
                Method::PUT,
                "/v1/admin/apps/{app}/auth/providers/{provider}",
                AppRole::Owner,
            ),
            (
                Method::PUT,
                "/v1/admin/apps/{app}/pay/merchants/{provider}",
                AppRole::Owner,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/realtime/channels/{channel}/presence",
                AppRole::Developer,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/realtime/sockets",
                AppRole::Developer,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/realtime/channels",
                AppRole::Developer,
            ),
            (
                Method::POST,
                "/v1/admin/apps/{app}/pay/orders/{id}/refunds",
                AppRole::Owner,
            ),
            (
                Method::GET,
                "/v1/admin/apps/{app}/queues/{queue}/messages",
                AppRole::Developer,
            ),
            (Method::GET, "/v1/admin/apps/{app}/queues", AppRole::Viewer),
            (
                Method::GET,
                "/v1/admin/apps/{app}/collections",
                AppRole::Viewer,
            ),
            (
                Method::GET,
                "/v1/apps/{app}/collections/{collection}/records",
                AppRole::Viewer,
            ),
            (
                Method::PATCH,
                "/v1/apps/{app}/collections/{collection}/records/{id}",
                AppRole::Developer,
            ),
        ];
        let routes = every_route();
        for (method, path, role) in cases {
            assert!(
                routes.iter().any(|(m, p)| *m == method && p == path),
                "{method} {path} is not a route any more"
            );
            assert_eq!(need(&method, path), Need::App(role), "{method} {path}");
        }
        assert_eq!(
            need(&Method::POST, "/v1/admin/apps/{app}/keys/rotate"),
            Need::InstanceOwner
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/admin/apps/{app}"),
            Need::InstanceOwner
        );
        assert_eq!(need(&Method::POST, "/v1/admin/apps"), Need::InstanceOwner);
        // Checking a definition changes nothing, and still needs a developer.
        let check = "/v1/admin/apps/{app}/collections/{name}/check";
        assert!(routes.iter().any(|(m, p)| *m == Method::POST && p == check));
        assert!(changes_nothing(&Method::POST, check));
        assert_eq!(need(&Method::POST, check), Need::App(AppRole::Developer));
        assert!(!changes_nothing(
            &Method::PUT,
            "/v1/admin/apps/{app}/collections/{name}"
        ));
        assert_eq!(need(&Method::GET, "/v1/admin/apps"), Need::InstanceOwner);
    }
}
