//! The dashboard: a small page (no framework, no build step) that drives the daemon's
//! API from the browser. The files are compiled into the binary and served by the API
//! listener at `/dashboard/`.

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The content and media type of a dashboard file (`""` is the page itself).
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "" | "index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "app.js" => Some((APP, "text/javascript; charset=utf-8")),
        "style.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}
