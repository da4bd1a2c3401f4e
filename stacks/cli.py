"""``python -m stacks``: plan, render, schema, config-reference and keys-conf offline, and doctor (this machine against a stack), without Pulumi."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stacks.config import json_schema, load_stack, parse, provider_setting, read_stack_file, reference, stack_file
from stacks.doctor import Check, ProbeError, doctor, inventory_json, inventory_yaml, local_probes
from stacks.errors import ConfigError
from stacks.keys import parse_api_keys
from stacks.plan import GpuPlan, StackPlan, plan
from stacks.render import gateway, render_all


def _print_plan(p: StackPlan, console: Console) -> None:
    console.print(f"[bold]target[/] {p.target}   [bold]image[/] {p.image.base} (vLLM {p.image.vllm_version}, TZ {p.image.timezone})")
    groups: list[tuple[str, list[str]]]
    if p.gpus:
        groups = [(f"GPU {g.index}: {g.name}, {g.memory_gib} GiB", g.models) for g in p.gpus]
    else:
        assert p.kubernetes is not None, "a plan without GPUs is a kubernetes plan"
        groups = [(f"per pod: {p.kubernetes.gpu_name}, {p.kubernetes.gpu_memory_gib} GiB per GPU", [m.name for m in p.models])]
    gpu_rows: list[GpuPlan | None] = list(p.gpus) or [None] * len(groups)
    for (title, names), gpu in zip(groups, gpu_rows, strict=True):
        table = Table(title=title, title_justify="left")
        for col in ("model", "fraction", "weights GiB", "KV GiB", "KV tokens", "max seqs", "max len", "starts after"):
            table.add_column(col, justify="left" if col in ("model", "starts after") else "right")
        for name in names:
            m = p.model(name)
            f = m.memory
            table.add_row(
                f"{m.name}" + (f" (tp {m.tensor_parallel})" if m.tensor_parallel > 1 else ""),
                f"{f.fraction:.3f}{'*' if m.fraction_source == 'auto' else ''}",
                f"{f.weights_gib:.2f}",
                f"{f.kv_gib:.2f}",
                f"{f.kv_tokens:,}",
                str(f.max_full_sequences),
                str(m.max_model_len),
                ", ".join(m.start_after) or "-",
            )
        if gpu is not None:
            table.caption = (
                f"sum {gpu.fraction_sum:.3f}; CUDA contexts + safety {gpu.overhead_gib:.2f} GiB; reserved {gpu.reserved_gib} GiB; "
                f"headroom {gpu.headroom_gib:.2f} GiB   (* = auto)"
            )
            table.caption_justify = "left"
        console.print(table)
    for note in p.notes:
        console.print(f"[dim]- {note}[/]")


def render_files(p: StackPlan) -> dict[str, str]:
    """Every file the components render, keyed by ``<component>/<file>``."""
    return {"plan.json": json.dumps(p.to_json(), indent=2, sort_keys=True) + "\n", **render_all(p)}


def _keys_conf() -> int:
    """keys.conf for the gateway-keys Secret when manifests are rendered (GitOps): keys come from the
    environment, never from arguments, so they stay out of shell history and process lists."""
    vllm_key = os.environ.get("VLLM_API_KEY", "")
    if not vllm_key:
        print("set VLLM_API_KEY (the vllm-api-key Secret's value) and, for a closed gateway, API_KEYS", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(gateway.keys_conf(parse_api_keys(os.environ.get("API_KEYS", "")), vllm_key))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _print_checks(checks: list[Check], console: Console) -> None:
    table = Table(title="vllm-stack doctor", title_justify="left", show_lines=False)
    for col in ("area", "check", "status", "found", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        style = STATUS_STYLE[c.status]
        table.add_row(c.area, c.name, f"[{style}]{c.status}[/]", c.detail, c.fix, style="dim" if c.status == "skip" else None)
    console.print(table)
    counts = {s: sum(c.status == s for c in checks) for s in STATUS_STYLE}
    console.print("checks: " + ", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)


def _doctor(args: argparse.Namespace, console: Console) -> int:
    err = Console(stderr=True, width=140)
    if args.inventory:
        try:
            inv = local_probes().gpu.inventory()
        except ProbeError as e:
            err.print(f"{e.message}\nfix: {e.fix}", markup=False, highlight=False)
            return 1
        if args.json:
            print(json.dumps(inventory_json(inv), indent=2))
        else:
            sys.stdout.write(inventory_yaml(inv, socket.gethostname()))
        return 0 if inv.gpus else 1
    path = stack_file(args.stack)
    try:
        raw = read_stack_file(path)
        hf_token_set = "hfToken" in raw  # its value stays in the file (parse takes it out of the config)
        p = plan(parse(raw))
    except ConfigError as e:
        err.print(e.render(), markup=False, highlight=False)
        return 1
    checks = doctor(p, local_probes(provider_setting(path, "docker:host")), hf_token_set=hf_token_set)
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        _print_checks(checks, console)
    return 1 if any(c.status == "fail" for c in checks) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks", description="Plan and render vllm-stack stacks offline.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("plan", help="print the GPU plan of a stack")
    sp.add_argument("stack", help="stack name (Pulumi.<stack>.yaml at the repo root) or a stack file path")
    sp.add_argument("--json", action="store_true", help="print plan.json instead of tables")
    sr = sub.add_parser("render", help="write plan.json and every rendered file")
    sr.add_argument("stack")
    sr.add_argument("--out", required=True, type=Path)
    sub.add_parser("schema", help="print the JSON Schema of the stack config")
    sub.add_parser("config-reference", help="print the configuration reference (docs/configuration.md) in Markdown")
    sub.add_parser(
        "keys-conf",
        help="print the gateway's keys.conf from $VLLM_API_KEY and $API_KEYS (comma-separated name:key entries), for Secrets you create yourself",
    )
    sd = sub.add_parser("doctor", help="check this machine against a stack before `pulumi up`; exits 1 when a check fails")
    sd.add_argument("stack", nargs="?", help="stack name or stack file path")
    sd.add_argument("--inventory", action="store_true", help="print this host's GPUs as the gpus block of a stack file")
    sd.add_argument("--json", action="store_true", help="print the checks (or the inventory) as JSON")
    args = parser.parse_args(argv)
    console = Console(width=160)

    if args.cmd == "doctor":
        if not args.stack and not args.inventory:
            sd.error("name a STACK to check, or pass --inventory")
        return _doctor(args, console)

    if args.cmd == "schema":
        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return 0
    if args.cmd == "config-reference":
        sys.stdout.write(reference.render())
        return 0
    if args.cmd == "keys-conf":
        return _keys_conf()
    try:
        p = plan(load_stack(args.stack))
    except ConfigError as err:
        Console(stderr=True, width=140).print(err.render(), markup=False, highlight=False)
        return 1
    if args.cmd == "plan":
        if args.json:
            print(json.dumps(p.to_json(), indent=2, sort_keys=True))
        else:
            _print_plan(p, console)
        return 0
    files = render_files(p)
    for rel, content in files.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    console.print(f"wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
