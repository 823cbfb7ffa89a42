//! The name a project goes by where weir.yml does not give one.

use std::path::Path;

use crate::Project;

/// The project name: from weir.yml, else the folder's name (characters a
/// name cannot hold become `_`).
pub fn project_name(dir: &Path, project: Option<&Project>) -> String {
    if let Some(p) = project {
        return p.name.clone();
    }
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    abs.file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| "weir".to_owned())
}
