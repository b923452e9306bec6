"""The shared decision vectors through the built module (govmx_synapse._native.Engine).

Usage: python vectors.py <vectors dir> <scratch dir>   (run by tests/tests/module.rs in the
Synapse venv). Exit 0 and "ok <n>" when every invite/createRoom case matches; exit 1 and one
line per mismatch otherwise. No pytest: plain asserts on the engine's answers.
"""

import datetime
import json
import os
import sys

import yaml

from govmx_synapse._native import Engine


def seconds(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main():
    vectors_dir, scratch = sys.argv[1], sys.argv[2]
    with open(os.path.join(vectors_dir, "vectors.yaml")) as f:
        vectors = yaml.safe_load(f)
    grants_file = os.path.join(scratch, "grants.json")
    with open(grants_file, "w") as f:
        json.dump({"grants": vectors.get("runtimeGrants", [])}, f)
    engine = Engine(
        json.dumps(
            {
                "server_name": vectors["ownServer"],
                "policy_dir": os.path.join(vectors_dir, "policy"),
                "grants_file": grants_file,
                # The vectors are PolicySet decisions: no deferral to a remote agency.
                "defer_grants_to_remote": False,
            }
        )
    )
    default_now = seconds(vectors["now"])
    refused, messages = engine.poll(default_now)
    if refused or engine.policy_version() is None:
        print("policy not loaded:", messages)
        return 1
    failures, checked = [], 0
    for case in vectors["cases"]:
        now = seconds(case["now"]) if "now" in case else default_now
        if case["op"] == "invite":
            answer = engine.user_may_invite(case["inviter"], case["invitee"], True, now)
        elif case["op"] == "createRoom":
            answer = engine.user_may_create_room(case["creator"], case["invitees"], now)
        else:
            continue  # `federate` is the gate's
        checked += 1
        if case["expect"] == "allow":
            if answer is not None:
                failures.append(f"{case['name']}: want allow, got {answer}")
        elif answer is None or answer[2] != case["rule"]:
            failures.append(f"{case['name']}: want deny {case['rule']}, got {answer}")
        elif answer[0] not in ("M_FORBIDDEN", "M_INVITE_BLOCKED") or not answer[1]:
            failures.append(f"{case['name']}: bad refusal {answer}")
    for failure in failures:
        print(failure)
    if failures:
        return 1
    print(f"ok {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
