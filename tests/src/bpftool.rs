//! What `bpftool` says about pinned programs and maps: which maps a
//! hook's program really uses, which the agent cannot report about
//! itself.

use std::{path::Path, process::Command};

use serde_json::Value;

/// `bpftool <args> --json`, parsed (null when it printed nothing).
pub fn json(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("--json")
        .output()
        .expect("running bpftool");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The id of the program pinned at `path`: a link's program, or a program
/// pinned itself (a TC classifier under clsact).
pub fn program_id(path: &Path) -> u64 {
    let p = path.display().to_string();
    json(&["link", "show", "pinned", &p])["prog_id"]
        .as_u64()
        .or_else(|| json(&["prog", "show", "pinned", &p])["id"].as_u64())
        .unwrap_or_else(|| panic!("bpftool shows no program pinned at {p}"))
}

/// The ids of the maps the program pinned at `path` uses.
pub fn program_maps(path: &Path) -> Vec<u64> {
    let prog = program_id(path);
    let info = json(&["prog", "show", "id", &prog.to_string()]);
    info["map_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no map ids for program {prog}: {info}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

/// The id and name of the map pinned at `path`.
pub fn map(path: &Path) -> (u64, String) {
    let shown = json(&["map", "show", "pinned", &path.display().to_string()]);
    let id = shown["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no map pinned at {}", path.display()));
    (id, shown["name"].as_str().unwrap_or_default().to_owned())
}
