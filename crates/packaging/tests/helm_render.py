"""Runs the real Helm engine (PyPI helm-python-sdk: Helm v4's Go SDK as a shared library)
for crates/packaging/tests/helm.rs. Reads one JSON request on stdin, writes one JSON
answer on stdout:

  {"action": "lint", "chart": DIR, "values": {...}}
      -> {"ok": true, "report": {...}}          (helm lint --strict)
  {"action": "render", "chart": DIR, "values": {...}, "name": N, "namespace": NS}
      -> {"ok": true, "manifests": {template path: text}}   (helm template / install)
      -> {"ok": false, "error": "HelmValuesError", "message": "..."}

Helm's own errors (a value the schema refuses, a template that fails) are answers, not
crashes, so the test can assert on their messages.
"""

import json
import sys

import helm_python as helm


def main() -> None:
    req = json.load(sys.stdin)
    action = req["action"]
    values = req.get("values")
    try:
        if action == "lint":
            report = helm.lint(req["chart"], values, strict=True)
            answer = {"ok": True, "report": report, "helm": helm.helm_sdk_version()}
        elif action == "render":
            with helm.Chart.load(req["chart"]) as chart:
                manifests = chart.render(
                    values,
                    name=req["name"],
                    namespace=req["namespace"],
                    is_install=True,
                )
            answer = {"ok": True, "manifests": manifests}
        else:
            raise SystemExit(f"unknown action {action!r}")
    except helm.HelmError as e:
        answer = {"ok": False, "error": type(e).__name__, "message": str(e)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
