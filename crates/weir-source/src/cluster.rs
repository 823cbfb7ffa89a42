//! A private PostgreSQL server for `weir demo`: `initdb` and `pg_ctl` from the
//! installed PostgreSQL binaries, a data folder of its own, a free port on
//! 127.0.0.1, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SourceError;

/// A running private cluster.
pub struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    run_as: Option<String>,
}

const INSTALL_HINT: &str =
    "PostgreSQL's server binaries (initdb, pg_ctl) were not found. Install them \
(Debian/Ubuntu: `apt-get install postgresql`), or point Weir at a running server with --source-url";

/// The folder holding `initdb` and `pg_ctl`: Debian's versioned folders first
/// (newest), then `pg_config --bindir`, then `PATH`.
pub fn find_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where the cluster for `data` lives when `data` itself cannot be reached
/// by the postgres user: `/var/tmp/weir-demo-pg/<hash of data's path>`.
fn shared_home(data: &Path) -> Result<PathBuf, SourceError> {
    let base = PathBuf::from("/var/tmp/weir-demo-pg");
    let io = |e: std::io::Error| SourceError::Io {
        path: base.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&base).map_err(io)?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // /var/tmp is everyone's: the folder must be root's own, not a link
    // someone else planted, or its contents are theirs to choose.
    let meta = std::fs::symlink_metadata(&base).map_err(io)?;
    if !meta.is_dir() || meta.uid() != 0 {
        return Err(SourceError::Config(format!(
            "{} is not a folder owned by root; remove it (someone else made it) and run the demo again",
            base.display()
        )));
    }
    // Others may pass through to their own cluster folders, no more.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
    // FNV-1a of the path: stable across runs and builds, so the demo finds
    // its cluster again.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let dir = base.join(format!("{h:016x}"));
    std::fs::create_dir_all(&dir).map_err(io)?;
    if std::fs::symlink_metadata(&dir)
        .map_err(io)?
        .file_type()
        .is_symlink()
    {
        return Err(SourceError::Config(format!(
            "{} is a link, not a folder",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Whether `user` can enter and write `dir`.
fn reachable_by(user: &str, dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(dir)
        .current_dir("/")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, the cluster runs as `user`,
/// which is created (a system user) when the machine has none.
fn ensure_user(user: &str) -> Result<(), SourceError> {
    let exists = Command::new("id")
        .arg(user)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    let ok = Command::new("useradd")
        .args([
            "--system",
            "--home-dir",
            "/var/lib/postgresql",
            "--shell",
            "/bin/sh",
            user,
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(SourceError::Config(format!(
            "running as root, the private PostgreSQL must run as the `{user}` user, which does not exist and could not be created"
        )))
    }
}

fn free_port() -> Result<u16, SourceError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| SourceError::Io {
        path: "127.0.0.1".into(),
        message: e.to_string(),
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| SourceError::Io {
            path: "127.0.0.1".into(),
            message: e.to_string(),
        })
}

impl PrivateCluster {
    /// Create (if needed) and start a cluster in `data`. PostgreSQL refuses to
    /// run as root, so as root the folder is handed to the `postgres` user and
    /// the tools run as that user.
    pub fn start(data: &Path) -> Result<PrivateCluster, SourceError> {
        Self::start_on(data, None)
    }

    /// [`PrivateCluster::start`] on `port` (a free one when `None`): a
    /// cluster restarted on its old port is the same server to its clients.
    pub fn start_on(data: &Path, port: Option<u16>) -> Result<PrivateCluster, SourceError> {
        let bin = find_bindir().ok_or_else(|| SourceError::Config(INSTALL_HINT.to_owned()))?;
        let io = |e: std::io::Error| SourceError::Io {
            path: data.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(data).map_err(io)?;
        let mut data = data.canonicalize().map_err(io)?;
        let run_as = if is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        if let Some(user) = &run_as {
            ensure_user(user)?;
            // Root's home, a `mktemp -d` folder, any folder of mode 700 on
            // the way: the postgres user cannot enter it. The cluster then
            // lives in a folder of its own under /var/tmp, one per project
            // folder, and the project's folder keeps a note of where.
            if !reachable_by(user, &data) {
                let home = shared_home(&data)?;
                let _ = std::fs::write(
                    data.join("WHERE.txt"),
                    format!(
                        "The postgres user cannot enter this folder, so the demo's PostgreSQL data lives in {}\n",
                        home.display()
                    ),
                );
                data = home;
            }
            let ok = Command::new("chown")
                .args(["-R", user])
                .arg(&data)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(SourceError::Config(format!(
                    "running as root, the private cluster must belong to the `{user}` user, but `chown {user} {}` failed",
                    data.display()
                )));
            }
        }
        let cluster = PrivateCluster {
            bin,
            data,
            port: match port {
                Some(p) => p,
                None => free_port()?,
            },
            run_as,
        };
        if !cluster.data.join("PG_VERSION").exists() {
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &cluster.path(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            )?;
        }
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
            cluster.port
        );
        let log = cluster.data.join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.path(),
                "-o",
                &opts,
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(cluster)
    }

    fn path(&self) -> String {
        self.data.display().to_string()
    }

    /// The connection URL (trust authentication, no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), SourceError> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // The postgres user may not be able to enter the caller's working folder.
        cmd.args(args).current_dir("/");
        let out = cmd.output().map_err(|e| SourceError::Io {
            path: exe.display().to_string(),
            message: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SourceError::Config(format!(
                "{tool} failed for the private cluster in {}: {}{}",
                self.data.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )))
        }
    }

    /// Stop the server (also done on drop).
    pub fn stop(&mut self) {
        if self.port != 0 {
            let _ = self.run("pg_ctl", &["-D", &self.path(), "-m", "fast", "-w", "stop"]);
            self.port = 0;
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
