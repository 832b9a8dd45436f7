#!/usr/bin/python3
"""Checks the deployment files against the binaries they run.

    deploy/check_flags.py BIN_DIR [--root REPO]
    deploy/check_flags.py BIN_DIR --self-test

For every container (deploy/k8s workloads, deploy/docker/compose.yaml
services) that runs rtc-auth, rtc-signaling, rtc-bridge or rtcctl:
  - every --flag in its command/args and every RTC_* variable in its
    environment must be listed by that binary's --help;
  - its main and admin addresses (--listen/RTC_LISTEN, --admin/RTC_ADMIN,
    else the --help default) must not be loopback, and (k8s) its
    containerPorts must be exactly those ports, each probe must use one of
    them (gRPC probes the main port, HTTP probes the admin port);
  - host:port references in RTC_AUTH, RTC_UPSTREAM, RTC_SENTINELS and
    RTC_REDIS must name a Service port (k8s) or a compose service.
Every k8s Service must select a workload in its namespace, and its
targetPorts must be containerPorts of that workload; NetworkPolicy ports
that name a workload must be its containerPorts. Files under deploy/local
(scripts and env files) are scanned for rtc-* command lines and RTC_*
variables too. Exit 1 with one line per problem (file: what), 0 when clean.
--self-test runs the check on the real tree (must pass) and on broken copies
(an unknown flag, an unknown variable, a wrong containerPort: each must be
reported, naming the file and the flag).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

BINARIES = ("rtc-auth", "rtc-signaling", "rtc-bridge", "rtcctl")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet")


class Help:
    """What one binary's --help lists."""

    def __init__(self, name, text):
        self.name = name
        self.flags = {}  # flag -> takes a value
        self.envs = set()
        self.defaults = {}  # flag -> default text
        for line in text.splitlines():
            m = re.match(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: (\S+))?\s{2,}(.*)$", line)
            if not m:
                continue
            flag, meta, desc = m.groups()
            self.flags[flag] = meta is not None
            e = re.search(r"\(env (RTC_[A-Z0-9_]+)(?:, default ([^)]*))?\)\s*$", desc)
            if e:
                self.envs.add(e.group(1))
                if e.group(2) is not None:
                    self.defaults[flag] = e.group(2)
        if not self.flags:
            raise SystemExit(f"check_flags: could not parse `{name} --help`")


def load_helps(bindir):
    helps = {}
    for b in BINARIES:
        path = os.path.join(bindir, b)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"check_flags: {path} missing or not executable (build it first)")
        r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise SystemExit(f"check_flags: `{path} --help` exited {r.returncode}")
        helps[b] = Help(b, r.stdout)
    return helps


def hostport(value):
    m = re.match(r"^\[?([^\]]*?)\]?:(\d+)$", value or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


class Container:
    def __init__(self, where, name, binary, argv, env, spec=None, ns=None, labels=None):
        self.where, self.name, self.binary, self.argv, self.env = where, name, binary, argv, env
        self.spec, self.ns, self.labels = spec or {}, ns, labels or {}


def find_binary(tokens):
    """(binary, its arguments) from a command line; None when no rtc binary runs."""
    for i, t in enumerate(tokens):
        base = os.path.basename(str(t))
        if base in BINARIES:
            return base, [str(x) for x in tokens[i + 1:]]
    return None, []


def split_shell(s):
    import shlex
    try:
        return shlex.split(s, comments=True)
    except ValueError:
        return s.split()


def argv_of(command, args):
    tokens = [str(x) for x in (command or [])] + [str(x) for x in (args or [])]
    if len(tokens) >= 3 and os.path.basename(tokens[0]) in ("sh", "bash") and tokens[1] == "-c":
        tokens = split_shell(" ".join(tokens[2:]))
    return tokens


class Checker:
    def __init__(self, root, helps):
        self.root, self.helps = root, helps
        self.errors = []
        self.containers = []
        self.k8s_docs = []  # (file, doc)
        self.compose = {}  # service -> (file, svc)

    def err(self, where, msg):
        self.errors.append(f"{os.path.relpath(where, self.root)}: {msg}")

    # ---------------------------------------------------------------- loading
    def load_yaml(self, path):
        try:
            with open(path, encoding="utf-8") as f:
                return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            self.err(path, f"YAML error: {e}")
            return []

    def collect(self):
        k8s = os.path.join(self.root, "deploy", "k8s")
        for dirpath, _, files in sorted(os.walk(k8s)):
            for fn in sorted(files):
                if fn.endswith((".yaml", ".yml")) and fn != "kustomization.yaml":
                    path = os.path.join(dirpath, fn)
                    for doc in self.load_yaml(path):
                        self.k8s_docs.append((path, doc))
                        self.k8s_containers(path, doc)
        docker = os.path.join(self.root, "deploy", "docker")
        for dirpath, _, files in sorted(os.walk(docker)):
            for fn in sorted(files):
                if re.match(r"^(docker-)?compose.*\.ya?ml$", fn):
                    path = os.path.join(dirpath, fn)
                    for doc in self.load_yaml(path):
                        self.compose_containers(path, doc)
        local = os.path.join(self.root, "deploy", "local")
        if os.path.isdir(local):
            self.scan_text_tree(local)

    def k8s_containers(self, path, doc):
        if not isinstance(doc, dict) or doc.get("kind") not in WORKLOADS:
            return
        spec = doc.get("spec", {}) or {}
        if doc["kind"] == "CronJob":
            spec = spec.get("jobTemplate", {}).get("spec", {}) or {}
        tmpl = spec.get("template", {}) if doc["kind"] != "Pod" else doc
        labels = (tmpl.get("metadata", {}) or {}).get("labels", {}) or {}
        pod = tmpl.get("spec", {}) or {}
        ns = (doc.get("metadata", {}) or {}).get("namespace")
        if doc["kind"] not in ("Pod",) and spec.get("selector", {}).get("matchLabels"):
            for k, v in spec["selector"]["matchLabels"].items():
                if labels.get(k) != v:
                    self.err(path, f"{doc['kind']} {doc['metadata'].get('name')}: selector {k}={v} does not match the pod template labels")
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            argv = argv_of(c.get("command"), c.get("args"))
            env = {}
            for e in c.get("env") or []:
                env[e["name"]] = e.get("value")
            binary, args = find_binary(argv)
            where = f"{doc['kind']} {doc['metadata'].get('name')} container {c.get('name')}"
            self.containers.append(Container((path, where), c.get("name"), binary, args, env, c, ns, labels))

    def compose_containers(self, path, doc):
        for name, svc in (doc.get("services") or {}).items():
            svc = svc or {}
            self.compose[name] = (path, svc)
            cmd = svc.get("command")
            if isinstance(cmd, str):
                cmd = split_shell(cmd)
            ep = svc.get("entrypoint")
            if isinstance(ep, str):
                ep = split_shell(ep)
            argv = argv_of(ep, cmd) if ep else argv_of(cmd, None)
            env = svc.get("environment") or {}
            if isinstance(env, list):
                env = dict(x.split("=", 1) if "=" in x else (x, None) for x in env)
            binary, args = find_binary(argv)
            self.containers.append(Container((path, f"service {name}"), name, binary, args, {k: (None if v is None else str(v)) for k, v in env.items()}))

    def scan_text_tree(self, top):
        union_env = set().union(*(h.envs for h in self.helps.values()))
        for dirpath, _, files in sorted(os.walk(top)):
            for fn in sorted(files):
                path = os.path.join(dirpath, fn)
                if fn.endswith((".yaml", ".yml")):
                    for doc in self.load_yaml(path):
                        if isinstance(doc, dict) and "services" in doc:
                            self.compose_containers(path, doc)
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    continue
                text = re.sub(r"\\\n", " ", text)
                code = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
                for var in sorted(set(re.findall(r"(?<![{$\w])(RTC_[A-Z0-9_]+)=", code))):
                    if var not in union_env:
                        self.err(path, f"{var} is not an environment variable of any rtc binary")
                for line in text.splitlines():
                    if line.lstrip().startswith("#"):
                        continue
                    for m in re.finditer(r"(?:^|[\s/\"'])(rtc-auth|rtc-signaling|rtc-bridge|rtcctl)\b(?![.\w-])([^;&|)]*)", line):
                        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2)):
                            if flag not in self.helps[m.group(1)].flags:
                                self.err(path, f"{m.group(1)}: unknown flag {flag} (not in `{m.group(1)} --help`)")

    # --------------------------------------------------------------- checking
    def effective(self, c, flag, env):
        h = self.helps[c.binary]
        val = None
        if env in c.env and c.env[env] is not None:
            val = c.env[env]
        a = c.argv
        for i, t in enumerate(a):
            if t == flag and i + 1 < len(a):
                val = a[i + 1]
            elif t.startswith(flag + "="):
                val = t.split("=", 1)[1]
        return val if val is not None else h.defaults.get(flag)

    def check_container(self, c):
        path, where = c.where
        if c.binary is None:
            stray = sorted(k for k in c.env if k.startswith("RTC_"))
            if stray:
                self.err(path, f"{where}: sets {', '.join(stray)} but runs no rtc binary (command must name one)")
            return
        h = self.helps[c.binary]
        a = c.argv
        i = 0
        while i < len(a):
            t = a[i]
            if t.startswith("--"):
                flag = t.split("=", 1)[0]
                if flag not in h.flags:
                    self.err(path, f"{where}: unknown flag {flag} for {c.binary} (not in `{c.binary} --help`)")
                elif h.flags[flag] and "=" not in t:
                    i += 1
            i += 1
        for k in sorted(c.env):
            if k.startswith("RTC_") and k not in h.envs:
                self.err(path, f"{where}: unknown environment variable {k} for {c.binary} (not in `{c.binary} --help`)")
        if c.binary == "rtcctl":
            return
        ports = {}
        for flag, env, kind in (("--listen", "RTC_LISTEN", "main"), ("--admin", "RTC_ADMIN", "admin")):
            host, port = hostport(self.effective(c, flag, env))
            if port is None:
                self.err(path, f"{where}: {flag}/{env} is not HOST:PORT")
                continue
            if host in ("127.0.0.1", "localhost", "::1"):
                self.err(path, f"{where}: {flag}/{env} listens on {host} (unreachable from outside the container): set {env}=0.0.0.0:{port}")
            ports[kind] = port
        if c.spec:
            self.check_k8s_ports(c, ports)

    def check_k8s_ports(self, c, ports):
        path, where = c.where
        cports = {}
        for p in c.spec.get("ports") or []:
            cports[p.get("name") or str(p["containerPort"])] = p["containerPort"]
        want = set(ports.values())
        have = set(cports.values())
        for p in sorted(have - want):
            self.err(path, f"{where}: containerPort {p} is neither the main ({ports.get('main')}) nor the admin ({ports.get('admin')}) port its flags set")
        for p in sorted(want - have):
            self.err(path, f"{where}: port {p} (set by its flags) has no containerPort")

        def resolve(port):
            return cports.get(port) if isinstance(port, str) else port

        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.spec.get(probe)
            if not pr:
                if probe != "startupProbe":
                    self.err(path, f"{where}: no {probe}")
                continue
            if "grpc" in pr:
                p = resolve(pr["grpc"].get("port"))
                if p != ports.get("main") or c.binary == "rtc-bridge":
                    self.err(path, f"{where}: {probe} gRPC port {p} is not the gRPC port {ports.get('main')}")
            elif "httpGet" in pr:
                p = resolve(pr["httpGet"].get("port"))
                ok = {ports.get("admin")} | ({ports.get("main")} if c.binary == "rtc-bridge" else set())
                if p not in ok:
                    self.err(path, f"{where}: {probe} HTTP port {p} is not the admin port {ports.get('admin')}")
                if pr["httpGet"].get("path") not in ("/healthz", "/readyz"):
                    self.err(path, f"{where}: {probe} path {pr['httpGet'].get('path')} is not /healthz or /readyz")
            elif "tcpSocket" in pr:
                p = resolve(pr["tcpSocket"].get("port"))
                if p not in want:
                    self.err(path, f"{where}: {probe} TCP port {p} is not one of {sorted(want)}")

    def k8s_services(self):
        svcs = {}
        for path, doc in self.k8s_docs:
            if isinstance(doc, dict) and doc.get("kind") == "Service":
                md = doc.get("metadata", {})
                svcs[(md.get("namespace"), md.get("name"))] = (path, doc)
        return svcs

    def pods_matching(self, ns, selector):
        out = []
        for c in self.containers:
            if c.spec and c.ns == ns and selector and all(c.labels.get(k) == v for k, v in selector.items()):
                out.append(c)
        return out

    def check_services(self):
        for (ns, name), (path, doc) in self.k8s_services().items():
            sel = (doc.get("spec") or {}).get("selector") or {}
            pods = self.pods_matching(ns, sel)
            if not pods:
                self.err(path, f"Service {name}: selector {sel} matches no workload in namespace {ns}")
                continue
            cports = {}
            for c in pods:
                for p in c.spec.get("ports") or []:
                    cports.setdefault(p["containerPort"], p["containerPort"])
                    if p.get("name"):
                        cports[p["name"]] = p["containerPort"]
            for p in (doc.get("spec") or {}).get("ports") or []:
                tp = p.get("targetPort", p.get("port"))
                if tp not in cports:
                    self.err(path, f"Service {name}: targetPort {tp} is not a containerPort of the pods it selects")

    def check_policies(self):
        for path, doc in self.k8s_docs:
            if not isinstance(doc, dict) or doc.get("kind") != "NetworkPolicy":
                continue
            ns = doc["metadata"].get("namespace")
            spec = doc.get("spec") or {}
            own = (spec.get("podSelector") or {}).get("matchLabels") or {}
            for rule in spec.get("ingress") or []:
                pods = self.pods_matching(ns, own) if own else []
                self.policy_ports(path, doc, rule, pods)
            for rule in spec.get("egress") or []:
                for peer in rule.get("to") or []:
                    sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                    pns = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name", ns)
                    if sel:
                        self.policy_ports(path, doc, rule, self.pods_matching(pns, sel))

    def policy_ports(self, path, doc, rule, pods):
        if not pods:
            return
        have = {p["containerPort"] for c in pods for p in (c.spec.get("ports") or [])}
        for p in rule.get("ports") or []:
            if isinstance(p.get("port"), int) and p["port"] not in have:
                self.err(path, f"NetworkPolicy {doc['metadata']['name']}: port {p['port']} is not a containerPort of {pods[0].labels.get('app.kubernetes.io/name')}")

    def check_references(self):
        svcs = self.k8s_services()
        for c in self.containers:
            if c.binary is None:
                continue
            path, where = c.where
            refs = []
            for key in ("RTC_AUTH", "RTC_SENTINELS", "RTC_UPSTREAM", "RTC_REDIS"):
                v = c.env.get(key)
                if not v:
                    continue
                if key == "RTC_REDIS":
                    m = re.match(r"^redis://(?:[^@]*@)?([^/:]+):(\d+)", v)
                    refs += [(key, m.group(1), int(m.group(2)))] if m else []
                    continue
                if key == "RTC_UPSTREAM":
                    v = ",".join(part.split("=", 1)[-1] for part in v.split(";"))
                for hp in v.split(","):
                    host, port = hostport(hp.strip())
                    if host is None:
                        self.err(path, f"{where}: {key} entry {hp!r} is not HOST:PORT")
                    else:
                        refs.append((key, host, port))
            for key, host, port in refs:
                if host in ("127.0.0.1", "localhost"):
                    self.err(path, f"{where}: {key} points at {host}, which is this container")
                elif c.spec:
                    parts = host.split(".")
                    if host.endswith(".svc.cluster.local"):
                        # pod.service.ns.svc.cluster.local or service.ns.svc.cluster.local
                        name, ns = (parts[1], parts[2]) if len(parts) == 6 else (parts[0], parts[1])
                    else:
                        name, ns = parts[0], c.ns
                    svc = svcs.get((ns, name))
                    if not svc:
                        self.err(path, f"{where}: {key} names {host}, but there is no Service {ns}/{name}")
                    elif port not in [p.get("port") for p in svc[1]["spec"].get("ports") or []]:
                        self.err(path, f"{where}: {key} uses {host}:{port}, but Service {ns}/{name} has no port {port}")
                elif host not in self.compose:
                    self.err(path, f"{where}: {key} names {host}, which is no compose service")
                else:
                    other = [x for x in self.containers if x.name == host and not x.spec]
                    if other and other[0].binary and other[0].binary != "rtcctl":
                        op = hostport(self.effective(other[0], "--listen", "RTC_LISTEN"))[1]
                        if port != op:
                            self.err(path, f"{where}: {key} uses {host}:{port}, but {host} listens on {op}")

    def run(self):
        self.collect()
        for c in self.containers:
            self.check_container(c)
        self.check_services()
        self.check_policies()
        self.check_references()
        return self.errors


def check(root, helps):
    return Checker(root, helps).run()


def self_test(root, helps):
    failed = False
    errs = check(root, helps)
    if errs:
        print("self-test: the real tree must pass first:\n  " + "\n  ".join(errs))
        return 1
    cases = [
        ("deploy/k8s/signaling.yaml", 'command: ["rtc-signaling"]',
         'command: ["rtc-signaling", "--sentinel-master", "rtc"]', "unknown flag --sentinel-master"),
        ("deploy/k8s/auth.yaml", "- name: RTC_MASTER_NAME", "- name: RTC_SENTINEL_MASTER",
         "unknown environment variable RTC_SENTINEL_MASTER"),
        ("deploy/k8s/bridge.yaml", "containerPort: 9080", "containerPort: 9090", "containerPort 9090"),
        ("deploy/docker/compose.yaml", 'command: ["rtc-bridge"]', 'command: ["rtc-bridge", "--upstreams", "x"]',
         "unknown flag --upstreams"),
        ("deploy/k8s/auth.yaml", '"0.0.0.0:8081"', '"127.0.0.1:8081"', "listens on 127.0.0.1"),
    ]
    for rel, old, new, expect in cases:
        with tempfile.TemporaryDirectory() as tmp:
            for d in ("deploy/k8s", "deploy/docker"):
                shutil.copytree(os.path.join(root, d), os.path.join(tmp, d),
                                ignore=shutil.ignore_patterns("secrets", ".env"))
            p = os.path.join(tmp, rel)
            with open(p, encoding="utf-8") as f:
                text = f.read()
            if old not in text:
                print(f"self-test: {rel} no longer contains {old!r}: update the self-test")
                failed = True
                continue
            with open(p, "w", encoding="utf-8") as f:
                f.write(text.replace(old, new, 1))
            errs = check(tmp, helps)
            hit = [e for e in errs if e.startswith(rel + ":") and expect in e]
            if hit:
                print(f"self-test ok: broken {rel} reported: {hit[0]}")
            else:
                print(f"self-test FAILED: broken {rel} ({new}) not reported as {expect!r}; got {errs}")
                failed = True
    return 1 if failed else 0


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bindir", help="directory with rtc-auth, rtc-signaling, rtc-bridge, rtcctl")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args(argv)
    helps = load_helps(a.bindir)
    if a.self_test:
        return self_test(a.root, helps)
    errs = check(a.root, helps)
    for e in errs:
        print(f"check_flags: {e}", file=sys.stderr)
    if errs:
        print(f"check_flags: {len(errs)} problem(s)", file=sys.stderr)
        return 1
    c = Checker(a.root, helps)
    c.collect()
    used = [x for x in c.containers if x.binary]
    print(f"check_flags: ok: {len(used)} rtc containers, every flag, RTC_* variable and port matches --help")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
