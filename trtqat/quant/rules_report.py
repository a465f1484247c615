"""What ``trtqat rules`` reports for a checkpoint: the groups a PTQ run would apply, the ignore policy.

Why its own module: it needs both the PTQ preparation (:mod:`.ptq`: fuse, replace, ignore policy) and the
discovery (:mod:`.share`), while :mod:`.ptq` itself applies the rules through :mod:`.share`. Kept in
``share.py`` it made ``ptq`` and ``share`` import each other; here both are imported, neither imports it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..models import load_checkpoint
from .ptq import QuantConfig, check_size, prepare_quantized
from .share import converted_modules, discover, load_policy


def rules_report(ckpt: str | Path, *, repo: str | Path | None = None, rules_file: Path | None = None,
                 size: int = 640, ignore: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """What ``trtqat rules`` prints: the groups a PTQ run would apply to ``ckpt``, the ignore policy.

    The checkpoint is loaded and quantized in memory only. For a trtqat PTQ/QAT checkpoint the groups
    stored in its metadata are returned (its quantizers are shared already). ``overrides`` are
    ``--rule ID=SETTING`` items (:meth:`trtqat.graph.policy.Policy.with_overrides`). ``float`` says why
    each float module stays float.
    """
    loaded = load_checkpoint(ckpt, repo)
    check_size(size, loaded.model)
    if loaded.extra:
        meta = loaded.extra
        return {"family": loaded.family.name, "version": loaded.family.version,
                "output_layout": loaded.family.output_layout, "policy": [], "groups": list(meta.get("groups", [])), "aligned": [],
                "fanouts": [], "ignored": list(meta.get("float", {})), "float": dict(meta.get("float", {})),
                "ignore_policy": list(meta.get("ignore", [])), "converted": list(meta.get("converted", {})),
                "block_ops": dict(meta.get("block_ops", {})), "placement": meta.get("placement", ""),
                "fanout_mode": "", "fanout_why": "", "stored": True}
    qconf = QuantConfig(ignore=ignore, rules_file=rules_file, rule_overrides=overrides)
    model, replaced, _, patterns = prepare_quantized(loaded, qconf, size, discover_only=True)
    policy = load_policy(loaded.family, rules_file).with_overrides(overrides)
    policy = dataclasses.replace(policy, ignore=policy.ignore + tuple(ignore))  # explicit: never converted
    result = discover(model, policy, size=size)
    converted = converted_modules(result.groups)
    fanout = policy.active("float-fanout")
    still_float = {m for f in result.fanouts for m in f.float_readers}
    why = {m: replaced.float_why[m] + (f"; {policy.fanout_mode()} mode: its input is also read in INT8"
                                       if m in still_float else "")
           for m in replaced.ignored if m not in converted}
    return {"family": loaded.family.name, "version": loaded.family.version,
            "output_layout": loaded.family.output_layout, "policy": list(policy.sources), **result.to_dict(),
            "ignored": list(why), "float": why, "ignore_policy": list(patterns),
            "unmatched_ignore": list(replaced.unmatched),
            "converted": converted, "block_ops": dict(replaced.block_ops), "fanout_mode": policy.fanout_mode(),
            "fanout_why": fanout[0].why if fanout else "", "stored": False}
