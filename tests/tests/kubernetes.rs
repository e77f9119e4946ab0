//! Kubernetes deployment (`deploy/kubernetes`) and its image
//! (`deploy/Containerfile`): every manifest validates offline against the
//! Kubernetes JSON schemas with `kubernetes-validate --strict` (unknown
//! fields fail), has the properties the agent depends on, and the
//! ConfigMap's `config.toml` is accepted by the agent's own parser and
//! `run --check-config`, with and without the feeds that need the Secret.
//!
//! YAML is read by PyYAML in the test virtualenv (a dependency of
//! kubernetes-validate) and handed over as JSON; the assertions are here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use blocklist_agent::{
    config::{Config, DEFAULT_CONFIG},
    datapath::pin::DEFAULT_PIN_DIR,
    state::DEFAULT_STATE_DIR,
};
use blocklist_tests::{agent::binary, venv_python};
use serde_json::Value;

/// Schema versions the manifests must validate against: 1.30 is the first
/// with `securityContext.appArmorProfile`, 1.37 the newest that
/// kubernetes-validate 1.37.0 ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0", "1.37.0"];
/// The pip requirement `cargo xtask setup` installs into the venv.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

const KUSTOMIZATION: &str = "kustomization.yaml";
/// Manifests deliberately left out of the kustomization.
const NOT_IN_KUSTOMIZATION: &[&str] = &["secret.example.yaml", "cleanup-daemonset.yaml"];
/// Marks the commented-out feeds that need the Secret in `config.toml`.
const CREDENTIAL_FEEDS_BEGIN: &str = "# ---- Feeds that need credentials ----";
const CREDENTIAL_FEEDS_END: &str = "# ---- End of feeds that need credentials ----";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// Every Kubernetes manifest: the YAML files of deploy/kubernetes except
/// the kustomization (not a Kubernetes resource), sorted.
fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.file_name().is_some_and(|n| n != KUSTOMIZATION)
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 4,
        "too few manifests in deploy/kubernetes: {v:?}"
    );
    v
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The venv's Python, with kubernetes-validate (and so PyYAML) importable.
fn python() -> PathBuf {
    let py = venv_python();
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import kubernetes_validate: run `cargo xtask setup`, which installs {VALIDATOR} \
         into target/taxii-venv",
        py.display()
    );
    py
}

/// Every YAML document of each file, as JSON, keyed by file name.
fn load_yaml(files: &[PathBuf]) -> BTreeMap<String, Vec<Value>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = {}\n\
        for p in sys.argv[1:]:\n\
        \x20   with open(p) as f:\n\
        \x20       out[p] = [d for d in yaml.safe_load_all(f) if d is not None]\n\
        json.dump(out, sys.stdout)\n";
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .args(files)
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "YAML parse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_path: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&out.stdout).expect("JSON from the YAML loader");
    by_path
        .into_iter()
        .map(|(p, docs)| (file_name(Path::new(&p)), docs))
        .collect()
}

/// Runs kubernetes-validate over `files` for every [`KUBERNETES_VERSIONS`].
/// Ok (its output) only when every resource passed against every version:
/// the tool itself exits 0 with a WARN for a kind or apiVersion it has no
/// schema for, which must fail here.
fn validate(files: &[PathBuf], strict: bool) -> Result<String, String> {
    let mut cmd = Command::new(python());
    cmd.args(["-m", "kubernetes_validate"]);
    if strict {
        cmd.arg("--strict");
    }
    for v in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(text);
    }
    let resources: usize = load_yaml(files).values().map(Vec::len).sum();
    let passed = text.lines().filter(|l| l.starts_with("INFO ")).count();
    let other: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("INFO "))
        .collect();
    if !other.is_empty() || passed != resources * KUBERNETES_VERSIONS.len() {
        return Err(format!(
            "expected {resources} resource(s) x {} version(s) to pass, {passed} did:\n{text}",
            KUBERNETES_VERSIONS.len()
        ));
    }
    Ok(text)
}

/// `file` with `from` replaced by `to`, written to `dir` under the same
/// name; `from` must occur, so a test cannot pass vacuously.
fn mutated(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(k8s_dir().join(file)).unwrap();
    assert!(text.contains(from), "{file} no longer contains {from:?}");
    let path = dir.join(file);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

/// `v[keys[0]][keys[1]]...`, failing with the path when absent.
fn at<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(v, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("missing {} in {v}", keys.join(".")))
    })
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> &'a str {
    at(v, keys)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", keys.join(".")))
}

fn array_at<'a>(v: &'a Value, keys: &[&str]) -> &'a [Value] {
    at(v, keys)
        .as_array()
        .unwrap_or_else(|| panic!("{} is not a list", keys.join(".")))
}

/// The one resource of `kind` in `file`.
fn resource<'a>(all: &'a BTreeMap<String, Vec<Value>>, file: &str, kind: &str) -> &'a Value {
    let docs = all
        .get(file)
        .unwrap_or_else(|| panic!("deploy/kubernetes/{file} is missing"));
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{file} must hold exactly one {kind}");
    found[0]
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no entry named {name} in {list:?}"))
}

fn strings(list: &[Value]) -> BTreeSet<&str> {
    list.iter().filter_map(Value::as_str).collect()
}

/// Every JSON path (dotted) at which `key` is `true`.
fn true_keys(v: &Value, key: &str, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if k == key && x == &Value::Bool(true) {
                    out.push(p.clone());
                }
                true_keys(x, key, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                true_keys(x, key, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn config_toml(all: &BTreeMap<String, Vec<Value>>) -> String {
    let cm = resource(all, "configmap.yaml", "ConfigMap");
    let file = Path::new(DEFAULT_CONFIG)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    str_at(cm, &["data", file]).to_owned()
}

/// `config.toml` with the feeds between the credential markers
/// uncommented: TOML lines there are `# [[...` or `# key = ...`, prose
/// starts with a capital letter.
fn with_credential_feeds(toml: &str) -> String {
    let begin = toml
        .find(CREDENTIAL_FEEDS_BEGIN)
        .expect("config.toml has the credential feeds block");
    let end = toml
        .find(CREDENTIAL_FEEDS_END)
        .expect("config.toml ends the credential feeds block");
    let block: Vec<String> = toml[begin..end]
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect();
    format!("{}{}\n{}", &toml[..begin], block.join("\n"), &toml[end..])
}

/// The environment variables holding credentials that a config names.
fn credential_vars(c: &Config) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for f in &c.feeds {
        v.extend(f.api_key_env.iter().cloned());
        v.extend(f.api_secret_env.iter().cloned());
        v.extend(f.password_env.iter().cloned());
        v.extend(
            f.headers
                .values()
                .filter_map(|h| h.strip_prefix("env:"))
                .map(str::to_owned),
        );
    }
    v
}

/// `blocklist-agent --config <toml> run --check-config` with exactly `env`
/// set among `vars`.
fn check_config(toml: &str, vars: &BTreeSet<String>, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(&path)
        .args(["run", "--check-config"]);
    for v in vars {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("running blocklist-agent");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let files = manifests();
    match validate(&files, true) {
        Ok(out) => println!("{out}"),
        Err(out) => panic!("kubernetes-validate --strict rejected deploy/kubernetes:\n{out}"),
    }
}

#[test]
fn validation_rejects_broken_manifests() {
    let dir = tempfile::tempdir().unwrap();
    // A misspelled field: only strict validation (what the API server does
    // with field validation on) catches it, which is why the suite uses it.
    let typo = mutated(
        dir.path(),
        "daemonset.yaml",
        "hostNetwork: true",
        "hostNetwrok: true",
    );
    let err = validate(std::slice::from_ref(&typo), true)
        .expect_err("--strict accepted a DaemonSet with a misspelled field");
    assert!(
        err.contains("hostNetwrok"),
        "error does not name the field: {err}"
    );
    validate(std::slice::from_ref(&typo), false)
        .expect("without --strict the misspelling passes; then --strict is what catches it");
    // A wrong type fails in either mode.
    let port = mutated(
        dir.path(),
        "daemonset.yaml",
        "containerPort: 9977",
        "containerPort: nine-nine",
    );
    let err = validate(&[port], true).expect_err("a non-numeric containerPort passed");
    assert!(err.contains("containerPort"), "{err}");
    // An apiVersion with no schema: the tool only warns, the wrapper fails.
    let api = mutated(
        dir.path(),
        "daemonset.yaml",
        "apiVersion: apps/v1",
        "apiVersion: apps/v1beta2",
    );
    let err = validate(&[api], true).expect_err("a removed apiVersion passed");
    assert!(err.contains("WARN"), "{err}");
    // A field that only exists from Kubernetes 1.30 on fails against 1.29's
    // schema, so the versions checked matter.
    let out = Command::new(python())
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.29.0"])
        .arg(k8s_dir().join("daemonset.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("appArmorProfile"),
        "the 1.29 schema accepted appArmorProfile: {text}"
    );
}

#[test]
fn kustomization_lists_the_manifests() {
    let kust = k8s_dir().join(KUSTOMIZATION);
    let all = load_yaml(std::slice::from_ref(&kust));
    let k = resource(&all, KUSTOMIZATION, "Kustomization");
    assert_eq!(
        str_at(k, &["apiVersion"]),
        "kustomize.config.k8s.io/v1beta1"
    );
    let listed = strings(array_at(k, &["resources"]));
    let on_disk: BTreeSet<String> = manifests().iter().map(|p| file_name(p)).collect();
    for f in &listed {
        assert!(
            on_disk.contains(*f),
            "{KUSTOMIZATION} lists {f}, which does not exist"
        );
    }
    for f in &on_disk {
        let left_out = NOT_IN_KUSTOMIZATION.contains(&f.as_str());
        assert_eq!(
            listed.contains(f.as_str()),
            !left_out,
            "{f}: every manifest is in {KUSTOMIZATION} except {NOT_IN_KUSTOMIZATION:?}"
        );
    }
    // The image the kustomization rewrites is the one the DaemonSet uses.
    let ds = load_yaml(&[k8s_dir().join("daemonset.yaml")]);
    let ds = resource(&ds, "daemonset.yaml", "DaemonSet");
    let image = str_at(
        &array_at(ds, &["spec", "template", "spec", "containers"])[0],
        &["image"],
    );
    let images = array_at(k, &["images"]);
    assert!(
        images
            .iter()
            .any(|i| image.starts_with(&format!("{}:", str_at(i, &["name"])))),
        "{KUSTOMIZATION} images do not match the DaemonSet's {image}"
    );
}

#[test]
fn manifests_have_what_the_agent_needs() {
    let files = manifests();
    let all = load_yaml(&files);

    // Nothing anywhere is a privileged container.
    for (file, docs) in &all {
        let mut found = Vec::new();
        for d in docs {
            true_keys(d, "privileged", "", &mut found);
        }
        assert!(
            found.is_empty(),
            "{file} sets privileged: true at {found:?}"
        );
    }

    // One namespace, allowing the privileged Pod Security level; every
    // other resource lives in it.
    let ns = resource(&all, "namespace.yaml", "Namespace");
    let namespace = str_at(ns, &["metadata", "name"]);
    assert_eq!(namespace, "xdp-blocklist");
    assert_eq!(
        str_at(
            ns,
            &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
        ),
        "privileged",
        "hostNetwork, hostPath and added capabilities need the privileged Pod Security level"
    );
    for (file, docs) in &all {
        for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
            assert_eq!(
                str_at(d, &["metadata", "namespace"]),
                namespace,
                "{file}: wrong namespace"
            );
        }
    }

    // Every DaemonSet: selector matches its pods, mounts name volumes.
    for (file, docs) in &all {
        for ds in docs.iter().filter(|d| d["kind"] == "DaemonSet") {
            let labels = at(ds, &["spec", "template", "metadata", "labels"]);
            for (k, v) in at(ds, &["spec", "selector", "matchLabels"])
                .as_object()
                .unwrap()
            {
                assert_eq!(&labels[k], v, "{file}: selector label {k} not on the pods");
            }
            let pod = at(ds, &["spec", "template", "spec"]);
            let volumes: BTreeSet<&str> = array_at(pod, &["volumes"])
                .iter()
                .map(|v| str_at(v, &["name"]))
                .collect();
            let containers = array_at(pod, &["containers"])
                .iter()
                .chain(pod["initContainers"].as_array().into_iter().flatten());
            for c in containers {
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    let name = str_at(m, &["name"]);
                    assert!(volumes.contains(name), "{file}: no volume {name}");
                }
            }
        }
    }

    // The agent's DaemonSet.
    let ds = resource(&all, "daemonset.yaml", "DaemonSet");
    let template = at(ds, &["spec", "template"]);
    let pod = at(template, &["spec"]);
    assert_eq!(
        pod["hostNetwork"], true,
        "XDP needs the node's network namespace"
    );
    assert_eq!(str_at(pod, &["dnsPolicy"]), "ClusterFirstWithHostNet");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert!(
        array_at(pod, &["tolerations"])
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the agent must tolerate every taint to run on all nodes"
    );
    let strategy = at(ds, &["spec", "updateStrategy"]);
    assert_eq!(str_at(strategy, &["type"]), "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);

    let agent = named(array_at(pod, &["containers"]), "agent");
    let args: Vec<&str> = array_at(agent, &["args"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["--config", DEFAULT_CONFIG, "run"]);

    let sc = at(agent, &["securityContext"]);
    let added = strings(array_at(sc, &["capabilities", "add"]));
    for cap in ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"] {
        assert!(
            added.contains(cap),
            "capability {cap} is not added: {added:?}"
        );
    }
    assert!(
        strings(array_at(sc, &["capabilities", "drop"])).contains("ALL"),
        "capabilities other than the added ones must be dropped"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        sc["runAsUser"], 0,
        "BPF needs root in the host user namespace"
    );
    assert_eq!(str_at(sc, &["seccompProfile", "type"]), "RuntimeDefault");

    // Host paths: the bpffs holding the pins and the state directory, at
    // the agent's default paths; the config at its default path.
    let volumes = array_at(pod, &["volumes"]);
    let mounts = array_at(agent, &["volumeMounts"]);
    let host_mount = |host: &str| {
        let vol = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let m = mounts
            .iter()
            .find(|m| m["name"] == vol["name"])
            .unwrap_or_else(|| panic!("the hostPath {host} is not mounted"));
        (vol, m)
    };
    let bpffs = Path::new(DEFAULT_PIN_DIR)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let (vol, m) = host_mount(bpffs);
    assert_eq!(str_at(m, &["mountPath"]), bpffs);
    assert_eq!(str_at(vol, &["hostPath", "type"]), "DirectoryOrCreate");
    assert_eq!(
        str_at(m, &["mountPropagation"]),
        "HostToContainer",
        "the pod must see the node's bpffs mount"
    );
    assert_ne!(m["readOnly"], true, "pinning writes to bpffs");
    let (vol, m) = host_mount(DEFAULT_STATE_DIR);
    assert_eq!(str_at(m, &["mountPath"]), DEFAULT_STATE_DIR);
    assert_eq!(str_at(vol, &["hostPath", "type"]), "DirectoryOrCreate");
    let cm = resource(&all, "configmap.yaml", "ConfigMap");
    let cm_vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    let cm_mount = named(mounts, str_at(cm_vol, &["name"]));
    assert_eq!(
        Path::new(str_at(cm_mount, &["mountPath"])),
        Path::new(DEFAULT_CONFIG).parent().unwrap()
    );

    // Credentials from the (optional) Secret.
    let secret = resource(&all, "secret.example.yaml", "Secret");
    let env_from = array_at(agent, &["envFrom"]);
    assert!(
        env_from
            .iter()
            .any(|e| e["secretRef"]["name"] == secret["metadata"]["name"]
                && e["secretRef"]["optional"] == true),
        "the agent must take the Secret's keys as environment variables, optionally"
    );

    // Metrics and health on the port the config listens on.
    let config = Config::parse(&config_toml(&all), Path::new("configmap.yaml"))
        .expect("the ConfigMap's config.toml");
    let port: u16 = config
        .metrics
        .listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("[metrics] listen has a port");
    let metrics = named(array_at(agent, &["ports"]), "metrics");
    assert_eq!(metrics["containerPort"], port);
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = at(agent, &[probe, "httpGet"]);
        assert_eq!(str_at(get, &["path"]), "/healthz", "{probe}");
        assert!(
            get["port"] == port || get["port"] == "metrics",
            "{probe} port {}",
            get["port"]
        );
    }
    let liveness = at(agent, &["livenessProbe"]);
    let period = liveness["periodSeconds"].as_u64().unwrap_or(10);
    let failures = liveness["failureThreshold"].as_u64().unwrap_or(3);
    assert!(
        period * failures >= 300,
        "liveness must tolerate minutes of 503 (a feed outage), not {}s",
        period * failures
    );
    let annotations = at(template, &["metadata", "annotations"]);
    assert_eq!(str_at(annotations, &["prometheus.io/scrape"]), "true");
    assert_eq!(
        str_at(annotations, &["prometheus.io/port"]),
        port.to_string()
    );
    assert_eq!(str_at(annotations, &["prometheus.io/path"]), "/metrics");

    let resources = at(agent, &["resources"]);
    assert_eq!(str_at(resources, &["limits", "memory"]), "512Mi");
    assert_eq!(str_at(resources, &["requests", "cpu"]), "50m");
}

#[test]
fn configmap_config_is_accepted_by_the_agent() {
    let all = load_yaml(&[k8s_dir().join("configmap.yaml")]);
    let toml = config_toml(&all);
    let config = Config::parse(&toml, Path::new("configmap.yaml")).expect("config.toml parses");
    assert_eq!(
        config.metrics.listen, "0.0.0.0:9977",
        "the kubelet and Prometheus reach the agent on the node's addresses"
    );
    assert_eq!(
        config.pin_dir, None,
        "the DaemonSet mounts the default pin dir"
    );
    assert_eq!(
        config.state_dir, None,
        "the DaemonSet mounts the default state dir"
    );
    assert!(!config.interfaces.is_empty(), "no interfaces");
    assert!(!config.feeds.is_empty(), "no feeds");
    // As deployed, without the Secret: no credentials needed.
    assert_eq!(credential_vars(&config), BTreeSet::new());
    let (ok, out) = check_config(&toml, &BTreeSet::new(), &[]);
    assert!(
        ok,
        "run --check-config rejected the ConfigMap's config.toml: {out}"
    );
}

#[test]
fn credential_feeds_match_the_example_secret() {
    let all = load_yaml(&[
        k8s_dir().join("configmap.yaml"),
        k8s_dir().join("secret.example.yaml"),
    ]);
    let toml = with_credential_feeds(&config_toml(&all));
    let config = Config::parse(&toml, Path::new("configmap.yaml"))
        .unwrap_or_else(|e| panic!("config.toml with the credential feeds: {e}\n{toml}"));
    let vars = credential_vars(&config);
    for v in [
        "ISMALICIOUS_API_KEY",
        "ISMALICIOUS_API_SECRET",
        "PARTNER_TAXII_PASSWORD",
    ] {
        assert!(vars.contains(v), "the credential feeds do not use {v}");
    }
    let secret = resource(&all, "secret.example.yaml", "Secret");
    let data = at(secret, &["stringData"]).as_object().unwrap();
    let keys: BTreeSet<String> = data.keys().cloned().collect();
    assert_eq!(
        keys, vars,
        "the example Secret's keys are the variables the config names"
    );
    for (k, v) in data {
        assert!(
            v.as_str().is_some_and(|s| s.starts_with("REPLACE")),
            "{k} in secret.example.yaml must be an obvious placeholder"
        );
    }

    let (ok, out) = check_config(&toml, &vars, &[]);
    assert!(
        !ok,
        "run --check-config passed without the credentials: {out}"
    );
    assert!(
        out.contains("ISMALICIOUS_API_KEY"),
        "the error names no variable: {out}"
    );
    let dummy: Vec<(&str, &str)> = vars.iter().map(|v| (v.as_str(), "dummy")).collect();
    let (ok, out) = check_config(&toml, &vars, &dummy);
    assert!(
        ok,
        "run --check-config rejected the credential feeds: {out}"
    );
    let feeds = format!("{} feed(s)", config.feeds.len());
    assert!(out.contains(&feeds), "{out}");
}

/// The image's build stage installs what `cargo xtask setup` does, at the
/// same versions, and copies every workspace member.
#[test]
fn containerfile_matches_the_build_setup() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let containerfile = read("deploy/Containerfile");
    let setup = read("xtask/src/setup.rs");
    let tools = read("xtask/src/tools.rs");
    // The build scripts take the toolchain pin from this shared file.
    let build_rs = read("blocklist-agent/build_ebpf.rs");
    let workspace = read("Cargo.toml");
    let quoted_after = |text: &str, what: &str| -> String {
        let rest = &text[text
            .find(what)
            .unwrap_or_else(|| panic!("{what} not found"))
            + what.len()..];
        rest.split('"').nth(1).unwrap().to_owned()
    };

    let nightly = quoted_after(&setup, "const EBPF_TOOLCHAIN");
    assert_eq!(nightly, quoted_after(&build_rs, "const EBPF_TOOLCHAIN"));
    let linker = quoted_after(&tools, "const BPF_LINKER_VERSION");
    assert_eq!(linker, quoted_after(&build_rs, "const BPF_LINKER_VERSION"));
    // The build image carries the pinned userspace toolchain's release
    // (rust-toolchain.toml), not the MSRV.
    let channel = quoted_after(&read("rust-toolchain.toml"), "channel");
    let rust = channel
        .rsplit_once('.')
        .map_or(channel.as_str(), |(mm, _)| mm)
        .to_owned();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(&quoted_after(&workspace, "rust-version")) <= version(&rust),
        "the pinned toolchain {channel} is older than the workspace's rust-version"
    );
    for needed in [
        format!("ARG EBPF_TOOLCHAIN={nightly}\n"),
        format!("ARG BPF_LINKER_VERSION={linker}\n"),
        format!("FROM docker.io/library/rust:{rust}-bookworm AS build\n"),
        "FROM docker.io/library/debian:bookworm-slim\n".to_owned(),
        "cargo build --release --locked -p blocklist-agent".to_owned(),
        "/usr/bin/blocklist-agent\n".to_owned(),
        "ENTRYPOINT [\"/usr/bin/blocklist-agent\"]\n".to_owned(),
        "ca-certificates".to_owned(),
    ] {
        assert!(
            containerfile.contains(&needed),
            "deploy/Containerfile lacks {needed:?}"
        );
    }
    // The LLVM packages bpf-linker builds against.
    for pkg in [
        "llvm-22-dev",
        "libpolly-22-dev",
        "libzstd-dev",
        "zlib1g-dev",
    ] {
        assert!(
            setup.contains(&format!("\"{pkg}\"")),
            "setup.rs no longer installs {pkg}"
        );
        assert!(
            containerfile.contains(pkg),
            "deploy/Containerfile lacks {pkg}"
        );
    }
    let members = &workspace[workspace.find("members").expect("workspace members")..];
    let members = &members[members.find('[').unwrap() + 1..members.find(']').unwrap()];
    for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if !m.is_empty() {
            assert!(
                containerfile.contains(&format!("COPY {m} {m}\n")),
                "deploy/Containerfile does not copy workspace member {m}"
            );
        }
    }
}
