//! The Debian programs of the `apps` suite — nginx, redis-server, iperf3 — as
//! their packages install them on the host (dynamically linked, unmodified), and
//! the root filesystem each one runs from.
//!
//! One root per program, made once per run with `lightvm rootfs`'s builder
//! ([`ProgramRoot`]): the program, its loader and libraries at their host
//! paths, the base files (`/etc/passwd` …) and the program's own configuration
//! and data. Every row runs the same program with the same configuration:
//!
//! - `process`: the host's own file, in the server namespace, with the root as
//!   its prefix (`nginx -p ROOT/`), so that it reads the same configuration;
//! - `container`: runc with the root as its read-only root filesystem, and
//!   tmpfs on `/run` and `/tmp` for what the program writes;
//! - `linux-program-*`: `lightvm run --rootfs ROOT`, the root packed into the VM
//!   (writes stay in the VM).
//!
//! Paths in the configuration are relative to the prefix, so that the one file
//! serves all three.

use std::ffi::OsString;
use std::path::Path;

use lightvm_images::program_root::ProgramRoot;

use crate::error::BenchError;

/// A Debian program measured as shipped.
#[derive(Debug)]
pub(crate) struct App {
    /// The program: its path on the host and in its root.
    pub program: &'static str,
    /// The Debian package that installs it (what a skip reason names).
    pub package: &'static str,
    /// Its arguments; `{prefix}` stands for the directory its root is seen at
    /// (`/` inside a container or a guest, the root's directory for a process).
    args: &'static [&'static str],
    /// Files written into its root: (path, contents).
    files: &'static [(&'static str, &'static str)],
    /// Host files copied into its root at the same paths.
    host_files: &'static [&'static str],
    /// Directories it writes into (a container mounts tmpfs on `/run` and
    /// `/tmp`, so they are made there).
    dirs: &'static [&'static str],
}

/// nginx's configuration: one process, no daemon, errors to stderr, temporary
/// files under `run/` (relative to the prefix: `-p`), the page from `www/`.
/// `user root` keeps it from handing its temporary directories to www-data
/// (a container has no CAP_CHOWN). Everything else is nginx's default.
const NGINX_CONF: &str = "daemon off;
master_process off;
worker_processes 1;
user root root;
error_log stderr warn;
pid run/nginx.pid;
events { worker_connections 512; }
http {
    include mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path run/body;
    proxy_temp_path run/proxy;
    fastcgi_temp_path run/fastcgi;
    uwsgi_temp_path run/uwsgi;
    scgi_temp_path run/scgi;
    server {
        listen 80;
        root www;
    }
}
";

/// The small static page nginx serves: nginx's own welcome page (Debian's
/// `/usr/share/nginx/html/index.html`, 615 bytes), the page of the published
/// nginx figures (Unikraft's among them).
pub(crate) const NGINX_PAGE: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href=\"http://nginx.org/\">nginx.org</a>.<br/>
Commercial support is available at
<a href=\"http://nginx.com/\">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

/// Debian's nginx-light.
pub(crate) const NGINX: App = App {
    program: "/usr/sbin/nginx",
    package: "nginx-light",
    args: &["-p", "{prefix}", "-c", "etc/nginx/nginx.conf"],
    files: &[
        ("/etc/nginx/nginx.conf", NGINX_CONF),
        ("/www/index.html", NGINX_PAGE),
    ],
    host_files: &["/etc/nginx/mime.types"],
    dirs: &["/run", "/tmp"],
};

/// Debian's redis-server: no persistence, every address, in the foreground.
pub(crate) const REDIS: App = App {
    program: "/usr/bin/redis-server",
    package: "redis-server",
    args: &[
        "--bind",
        "0.0.0.0",
        "--port",
        "6379",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ],
    files: &[],
    host_files: &[],
    dirs: &["/run", "/tmp"],
};

/// Debian's iperf3, as a server (its test file goes to `/tmp`).
pub(crate) const IPERF3: App = App {
    program: "/usr/bin/iperf3",
    package: "iperf3",
    args: &["-s", "-p", "5201"],
    files: &[],
    host_files: &[],
    dirs: &["/run", "/tmp"],
};

impl App {
    /// Its arguments for a root seen at `prefix`.
    pub(crate) fn args(&self, prefix: &Path) -> Vec<OsString> {
        let mut prefix = prefix.as_os_str().to_owned();
        if !prefix.to_string_lossy().ends_with('/') {
            prefix.push("/");
        }
        self.args
            .iter()
            .map(|arg| {
                if *arg == "{prefix}" {
                    prefix.clone()
                } else {
                    OsString::from(arg)
                }
            })
            .collect()
    }

    /// Whether the host has the program.
    pub(crate) fn installed(&self) -> bool {
        crate::platform::is_executable(Path::new(self.program))
    }

    /// Makes its root filesystem in `dir`.
    pub(crate) fn make_root(&self, dir: &Path) -> Result<(), BenchError> {
        let failed = |e: lightvm_images::program_root::ProgramRootError| {
            BenchError::platform("bench", format!("making the root of {}: {e}", self.program))
        };
        let mut root = ProgramRoot::new(dir).map_err(failed)?;
        root.add_base_files().map_err(failed)?;
        root.add_program(Path::new(self.program)).map_err(failed)?;
        for file in self.host_files {
            root.add_path(Path::new(file)).map_err(failed)?;
        }
        for (path, contents) in self.files {
            root.write_file(Path::new(path), contents.as_bytes())
                .map_err(failed)?;
        }
        for path in self.dirs {
            root.make_dir(Path::new(path)).map_err(failed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_filled_in_with_a_trailing_slash() {
        assert_eq!(
            NGINX.args(Path::new("/tmp/root")),
            ["-p", "/tmp/root/", "-c", "etc/nginx/nginx.conf"]
        );
        assert_eq!(NGINX.args(Path::new("/"))[1], "/");
        assert_eq!(REDIS.args(Path::new("/x")).len(), REDIS.args.len());
    }

    #[test]
    fn nginx_writes_only_under_its_prefix_and_serves_a_small_page() {
        for line in NGINX_CONF.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [directive, path, ..] = words.as_slice() {
                if directive.ends_with("_path") || *directive == "pid" {
                    assert!(path.starts_with("run/"), "{line}");
                }
            }
        }
        assert!(
            (500..1000).contains(&NGINX_PAGE.len()),
            "{}",
            NGINX_PAGE.len()
        );
    }

    #[test]
    fn an_apps_root_holds_the_program_its_libraries_and_its_files() {
        if !NGINX.installed() {
            eprintln!("skipping: {} is not installed", NGINX.program);
            return;
        }
        let dir = std::env::temp_dir().join(format!("lightvm-bench-app-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        NGINX.make_root(&dir).unwrap();
        for path in [
            "usr/sbin/nginx",
            "etc/nginx/nginx.conf",
            "etc/nginx/mime.types",
            "www/index.html",
            "etc/passwd",
            "run",
            "tmp",
        ] {
            assert!(dir.join(path).exists(), "{path}");
        }
        let loader = std::fs::read_dir(dir.join("usr/lib/x86_64-linux-gnu"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("ld-linux"));
        assert!(loader, "the dynamic loader is in the root");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
