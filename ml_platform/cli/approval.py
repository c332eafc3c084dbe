"""`ml-platform train | approve | reject`: a manual retrain through the gate, and a person's
decision on a candidate when ``deploy.approval: required``."""

from __future__ import annotations

import sys

from ml_platform.cli.common import model_of, previous_failure, settings_of


def cmd_train(args) -> int:
    from ml_platform.control.runner import train_now
    from ml_platform.core.approval import os_user
    from ml_platform.defs.definitions import load_definitions
    from ml_platform.runtime.instance import get_instance

    s = settings_of(args)
    previous_failure(s)
    name = model_of(s, args.model)
    instance = get_instance(s)
    out = train_now(s, load_definitions(s), instance, name, by=args.by or os_user())
    if out.version is None:  # nothing to judge: a failure, not a gate outcome
        print(f"train failed: {out.error}", file=sys.stderr)
        return 1
    verdict = (
        "deployed"
        if out.deployed
        else out.staged
        if out.staged
        else "awaiting approval"
        if out.awaiting_approval
        else "rejected by the gate"
        if not all(p for _, p, _ in out.gate)
        else "not deployed"
    )
    print(f"{name}: candidate v{out.version}: {verdict}")
    return 0


def cmd_approve(args) -> int:
    from ml_platform.control.operator_actions import approve
    from ml_platform.control.promotion import PromotionError
    from ml_platform.core.approval import os_user
    from ml_platform.resources.endpoint import endpoint_for
    from ml_platform.resources.registry import registry_for

    s = settings_of(args)
    name = model_of(s, args.model)
    by = args.by or os_user()
    try:
        p = approve(s, registry_for(s), endpoint_for(s), name, args.version, by=by)
    except PromotionError as e:
        print(f"approve refused: {e}", file=sys.stderr)
        return 1
    if p.version == p.previous and p.version is not None:  # approved into a canary (deploy.strategy)
        print(f"{name}: approved by {by}; {p.endpoint}; v{p.version} serves the rest until live_shadow decides")
        return 0
    print(
        f"{name}: v{p.version} approved by {by}; champion "
        f"{'none' if p.previous is None else f'v{p.previous}'} -> v{p.version}; endpoint: {p.endpoint}"
    )
    return 0


def cmd_reject(args) -> int:
    from ml_platform.control.operator_actions import reject
    from ml_platform.control.promotion import PromotionError
    from ml_platform.core.approval import os_user
    from ml_platform.resources.endpoint import endpoint_for
    from ml_platform.resources.registry import registry_for

    s = settings_of(args)
    name = model_of(s, args.model)
    by = args.by or os_user()
    try:
        r = reject(s, registry_for(s), name, args.version, by=by, reason=args.reason or "", endpoint=endpoint_for(s))
    except PromotionError as e:
        print(f"reject refused: {e}", file=sys.stderr)
        return 1
    print(
        f"{name}: v{r.version} rejected by {by}; the champion stays" + (f"; {r.stage_ended}" if r.stage_ended else "")
    )
    if r.stage_ended:
        show_stage_ended(s, name, r.version)
    return 0


def show_stage_ended(s, name: str, version: int) -> None:
    """The stage a person ended, on the ``live_shadow`` check in the UI (the registry and the audit
    hold it already: their recorded reason is the one shown)."""
    from ml_platform.defs.staging import ended_by_hand
    from ml_platform.names import LIVE_CHECK
    from ml_platform.resources.registry import registry_for
    from ml_platform.runtime.instance import get_instance

    try:
        _, why = registry_for(s).gate_verdicts(name, version, [LIVE_CHECK])[LIVE_CHECK]
        get_instance(s).report_runless_asset_event(ended_by_hand(name, version, why))
    except Exception as e:  # noqa: BLE001 - recorded; only the UI's copy is missing
        print(f"warning: recorded, but not shown on the live_shadow check: {type(e).__name__}: {e}", file=sys.stderr)


def add_commands(command) -> None:
    """``command(name, help)`` -> the subparser (cli.parser's helper)."""
    tr = command("train", "train a candidate now (trigger manual) through the gate; prints its verdict")
    tr.add_argument("--model")
    tr.add_argument("--by", help="who asks (default: the OS user)")
    tr.set_defaults(fn=cmd_train)
    for name, fn, help in (
        ("approve", cmd_approve, "deploy a candidate awaiting approval (still gated)"),
        (
            "reject",
            cmd_reject,
            "reject a candidate awaiting approval, or in shadow / canary (its stage ends now); the champion stays",
        ),
    ):
        c = command(name, help)
        c.add_argument("--model")
        c.add_argument(
            "--version",
            type=int,
            help="default: the newest candidate awaiting approval"
            + ("; for reject, the one in shadow / canary first" if name == "reject" else ""),
        )
        c.add_argument("--by", help="who decides (default: the OS user); recorded in the audit")
        if name == "reject":
            c.add_argument("--reason", help="why, recorded with the decision")
        c.set_defaults(fn=fn)
