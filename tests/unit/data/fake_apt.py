"""A fake apt-cache / apt-get for unit tests, driven by $FAKE_APT_STATE (a JSON file).

State: {"offers": [[package, version, suite, "Sources"|"Packages"], ...],  # package may be pkg:arch
        "configured": [[suite, "deb"|"deb-src"], ...],
        "show": {"pkg:arch=version": "Field: value\n...", ...},  # apt-cache show records
        "fetch": ["ok" | "503" | "404" | "hang" | "wrong-version", ...]}  # one per apt-get fetch, then "ok"
Every fetch is appended to "calls" in the state file.
"""

import json
import os
import sys
import time
from pathlib import Path

state_file = Path(os.environ["FAKE_APT_STATE"])
state = json.loads(state_file.read_text())
tool = globals().get("TOOL") or Path(sys.argv[0]).name  # set by the wrapper on PATH
args = [a for a in sys.argv[1:] if not a.startswith("-") and "::" not in a]

if tool == "apt-cache" and args[:1] == ["madison"]:
    for package, version, suite, index in state["offers"]:
        # As apt does: the native architecture's packages (amd64 here) are named without ":amd64".
        if package == args[1].removesuffix(":amd64"):
            arch = "" if index == "Sources" else " " + (package.partition(":")[2] or "amd64")
            print(f" {package} | {version} | http://mirror.example/debian {suite}/main{arch} {index}")
    sys.exit(0)
if tool == "apt-cache" and args[:1] == ["show"]:
    record = state.get("show", {}).get(args[1])
    if record is None:
        print("E: No packages found", file=sys.stderr)
        sys.exit(100)
    print(f"Package: {args[1].split(':')[0]}\n{record}")
    sys.exit(0)
if tool == "apt-get" and args[:1] == ["update"]:
    print("Reading package lists...")
    sys.exit(0)
if tool == "apt-get" and args[:1] == ["indextargets"]:
    for suite, target in state["configured"]:
        print(f"{suite} {target}")
    sys.exit(0)
if tool == "apt-get" and args[0] in ("source", "download"):
    package, version = args[1].split("=", 1)
    state.setdefault("calls", []).append(args[1])
    outcome = state["fetch"].pop(0) if state["fetch"] else "ok"
    state_file.write_text(json.dumps(state))
    url = f"http://mirror.example/debian/pool/main/{package[0]}/{package}/{package}_{version}.dsc"
    if outcome in ("503", "404"):
        reason = {"503": "503  Service Unavailable", "404": "404  Not Found"}[outcome]
        print(f"Err:1 {url}\n  {reason}\nE: Failed to fetch {url}  {reason} [IP: 192.0.2.1 80]\n"
              "E: Failed to fetch some archives.", file=sys.stderr)
        sys.exit(100)
    if outcome == "hang":
        time.sleep(600)
    got = "0.0-wrong" if outcome == "wrong-version" else version
    upstream = version.split(":")[-1].split("-")[0]
    if args[0] == "source":
        Path(f"{package}_{got}.dsc").write_text(f"Format: 3.0 (quilt)\nSource: {package}\nVersion: {got}\n")
        Path(f"{package}-{upstream}").mkdir()
        Path(f"{package}-{upstream}/VERSION").write_text(got + "\n")
    else:
        Path(f"{package}_{got}_amd64.deb").write_text("not a real deb\n")
    sys.exit(0)
print(f"fake apt: unexpected call {sys.argv}", file=sys.stderr)
sys.exit(99)
