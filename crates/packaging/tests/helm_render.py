"""Runs the real Helm engine (PyPI helm-python-sdk: Helm v4's Go SDK as a shared library)
for crates/packaging/tests/helm.rs. Reads JSON requests on stdin, one a line, and writes
one JSON answer a line on stdout for each:

  {"action": "lint", "chart": DIR, "values": {...}}
      -> {"ok": true, "report": {...}}          (helm lint --strict)
  {"action": "render", "chart": DIR, "values": {...}, "name": N, "namespace": NS}
      -> {"ok": true, "manifests": {template path: text}}   (helm template / install)
      -> {"ok": false, "error": "HelmValuesError", "message": "..."}
  {"action": "install" | "upgrade" | "uninstall", "server": URL, "chart": DIR,
   "values": {...}, "name": N, "namespace": NS}
      -> {"ok": true, "release": {"name", "namespace", "revision", "status", "app_version"}}
         (helm install / upgrade / uninstall against the API server at URL)

Releases are kept with Helm's "memory" storage driver, so they live as long as this
process: a test installs and upgrades through one session. (The default "secret" driver
needs protobuf request bodies, which the sandbox does not take yet.)

Helm's own errors (a value the schema refuses, a template that fails) are answers, not
crashes, so the test can assert on their messages.
"""

import json
import sys

import helm_python as helm


def release_summary(release: dict) -> dict:
    release = release.get("release", release)
    keys = ("name", "namespace", "revision", "status", "app_version")
    return {k: release.get(k) for k in keys}


def answer(req: dict, configs: dict) -> dict:
    action = req["action"]
    values = req.get("values")
    try:
        if action == "lint":
            report = helm.lint(req["chart"], values, strict=True)
            return {"ok": True, "report": report, "helm": helm.helm_sdk_version()}
        if action == "render":
            with helm.Chart.load(req["chart"]) as chart:
                manifests = chart.render(
                    values,
                    name=req["name"],
                    namespace=req["namespace"],
                    is_install=True,
                )
            return {"ok": True, "manifests": manifests}
        if action in ("install", "upgrade", "uninstall"):
            server = req["server"]
            if server not in configs:
                configs[server] = helm.Config(kube_apiserver=server, storage_driver="memory")
            cfg = configs[server]
            if action == "uninstall":
                release = cfg.uninstall(req["name"], timeout=60)
            else:
                release = getattr(cfg, action)(
                    req["chart"], req["name"], values, namespace=req["namespace"], timeout=60
                )
            return {"ok": True, "release": release_summary(release)}
        raise SystemExit(f"unknown action {action!r}")
    except helm.HelmError as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


def main() -> None:
    configs: dict = {}
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(json.loads(line), configs)), flush=True)


if __name__ == "__main__":
    main()
