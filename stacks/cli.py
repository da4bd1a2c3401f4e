"""``python -m stacks``: plan, render, schema, config-reference and keys-conf offline, and doctor (this machine against a stack),
without Pulumi; one function per command."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from stacks import render_dir
from stacks.config import json_schema, load_stack, parse, provider_setting, read_stack_file, reference, stack_file
from stacks.doctor import Check, ProbeError, doctor, inventory_json, inventory_yaml, local_probes
from stacks.doctor.endpoint_checks import key_variable
from stacks.errors import ConfigError, debugging, internal_error
from stacks.keys import parse_api_keys
from stacks.plan import GpuPlan, ModelPlan, StackPlan, plan
from stacks.plan.types import SwapGroupPlan
from stacks.render import endpoints, gateway, render_all
from stacks.render import kubernetes as kube_manifests

PLAN_COLUMNS = ("model", "fraction", "weights\nGiB", "KV\nGiB", "KV\ntokens", "maxNum\nSeqs", "full seqs\nin KV", "maxModel\nLen", "starts\nafter")
"""The plan table's headers: the settings by their keys (maxNumSeqs, maxModelLen), beside what the plan computed (the
full-length sequences the KV cache holds at once)."""
TEXT_COLUMNS = {0, 8}
"""Left-aligned; the others are figures."""


def _plan_rows(p: StackPlan, names: list[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name in names:
        m = p.model(name)
        f = m.memory
        rows.append(
            (
                f"{m.name}" + _split(m),
                f"{f.fraction:.3f}{'*' if m.fraction_source == 'auto' else ''}",
                f"{f.weights_gib:.2f}",
                f"{f.kv_gib:.2f}",
                f"{f.kv_tokens:,}",
                str(m.max_num_seqs),
                str(f.max_full_sequences),
                str(m.max_model_len),
                f"swap group {m.swap.group}" if m.swap else ", ".join(m.start_after) or "-",
            )
        )
    return rows


def _print_plan(p: StackPlan, console: Console) -> None:
    if p.models:
        console.print(f"[bold]target[/] {p.target}   [bold]image[/] {p.image.base} (vLLM {p.image.vllm_version}, TZ {p.image.timezone})")
        console.print(f"[bold]planned with[/] {p.image.vllm_rules}")
    else:
        console.print(f"[bold]target[/] {p.target}   no vLLM (every model is served elsewhere), TZ {p.timezone}")
    groups: list[tuple[str, list[str]]]
    if p.gpus:
        groups = [(f"GPU {g.index}: {g.name}, {g.memory_gib} GiB", g.models) for g in p.gpus]
    elif not p.models:
        groups = []
    else:
        assert p.kubernetes is not None, "a plan without GPUs is a kubernetes plan"
        groups = [(f"per pod: {p.kubernetes.gpu_name}, {p.kubernetes.gpu_memory_gib} GiB per GPU", [m.name for m in p.models])]
    gpu_rows: list[GpuPlan | None] = list(p.gpus) or [None] * len(groups)
    for (title, names), gpu in zip(groups, gpu_rows, strict=True):
        rows = _plan_rows(p, names)
        caption = (
            f"sum {gpu.fraction_sum:.3f}; CUDA contexts + safety {gpu.overhead_gib:.2f} GiB; reserved {gpu.reserved_gib} GiB; "
            f"headroom {gpu.headroom_gib:.2f} GiB   (* = auto)"
            if gpu is not None
            else "(* = auto)"
        )
        # light lines keep the table narrow; a terminal narrower than the whole table gets one line per model instead,
        # wrapped between its figures: a number or a name is never cut or folded
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, caption=caption, caption_justify="left")
        for i, col in enumerate(PLAN_COLUMNS):
            table.add_column(col, justify="left" if i in TEXT_COLUMNS else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        if console.measure(table, options=console.options.update_width(UNWRAPPED)).maximum <= console.width:
            console.print(table)
            continue
        console.print(title)
        for name, fraction, weights, kv, tokens, seqs, full, length, after in rows:
            console.print(
                f"  {name}: fraction {fraction}, weights {weights} GiB, KV {kv} GiB ({tokens} tokens), maxNumSeqs {seqs} "
                f"({full} full-length in KV), maxModelLen {length}, starts after {after}"
            )
        console.print(caption)
    for m in p.models:
        if m.memory.stages:
            console.print(_stages_table(m))
    for group in p.swap_groups:
        console.print(_swap_table(p, group))
    if p.externals:
        _print_elsewhere(p, console)
    for note in p.notes:
        console.print(f"[yellow]- {note}[/]" if note.startswith("warning: ") else f"[dim]- {note}[/]")


def _split(m: ModelPlan) -> str:
    """How a server spreads: nodes x GPUs per node across nodes, else its tensor and pipeline sizes."""
    if m.nodes > 1:
        return f" ({m.nodes} nodes x {m.gpus_per_node} GPUs)"
    parts = [f"tp {m.tensor_parallel}"] if m.tensor_parallel > 1 else []
    parts += [f"pp {m.pipeline_parallel}"] if m.pipeline_parallel > 1 else []
    return f" ({', '.join(parts)})" if parts else ""


def _stages_table(m: ModelPlan) -> Table:
    """Every pipeline stage's GPUs: the figures above are the heaviest stage's."""
    table = Table(title=f"{m.name}: per GPU of each pipeline stage", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, col in enumerate(("stage", "node", "layers", "weights GiB", "activation GiB", "KV GiB", "footprint GiB")):
        table.add_column(col, justify="left" if i < 3 else "right", overflow="fold")
    for st in m.memory.stages:
        node = f"{st.node}" + (" (leader)" if st.node == 0 else "") if m.nodes > 1 else "-"
        layers = f"{st.first_layer}-{st.first_layer + st.layers - 1}"
        table.add_row(str(st.stage), node, layers, f"{st.weights_gib:.2f}", f"{st.activation_gib:.2f}", f"{st.kv_gib:.2f}", f"{st.footprint_gib:.2f}")
    return table


def _swap_table(p: StackPlan, g: SwapGroupPlan) -> Table:
    """A swap group: its members awake and asleep, the host memory level 1 needs, and what a swap costs."""
    where = f"GPU{'s' if len(g.gpus) > 1 else ''} {', '.join(map(str, g.gpus))}" if g.gpus else f"{g.gpu_count} GPU{'s' if g.gpu_count > 1 else ''} per pod"
    table = Table(
        title=f"swap group {g.name} ({where}): {g.awake} of {len(g.members)} awake at once", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for i, col in enumerate(("member", "level", "awake GiB", "asleep GiB", "host GiB", "wake s", "sleep s", "idle s")):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for name in g.members:
        s = p.model(name).swap
        assert s is not None
        table.add_row(
            name,
            str(s.level),
            f"{s.awake_gib:.2f}",
            f"{s.asleep_gib:.2f}",
            f"{s.host_gib:.1f}",
            f"{s.wake_seconds:.1f}",
            f"{s.sleep_seconds:.1f}",
            str(s.idle_seconds or "-"),
        )
    table.caption = (
        f"reserved per GPU {g.reserved_gib:.2f} GiB (all asleep + {', '.join(g.largest_awake)} awake); host memory {g.host_memory_gib:.1f} GiB; "
        f"a swap costs the sleep of the member leaving plus the wake of the one coming (level-1 rates measured on an H100); "
        f"queue {g.queue_size}, wait {g.max_wait_seconds} s, drain {g.drain_seconds} s"
    )
    table.caption_justify = "left"
    return table


def _print_elsewhere(p: StackPlan, console: Console) -> None:
    """Models served elsewhere: where each goes and under which id; the stack's Ollama with what it holds on a GPU."""
    table = Table(title="served elsewhere (no GPU planned)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "aliases", "endpoint", "url", "as", "key", "messages"):
        table.add_column(col, overflow="fold")
    for m in p.externals:
        e = p.endpoint(m.endpoint)
        messages = "yes" if e.messages else "-"
        table.add_row(m.name, ", ".join(m.served_names[1:]) or "-", e.name, e.url, m.upstream_model, e.key_secret or "-", messages)
    console.print(table)
    if p.ollama:
        o = p.ollama
        where = f"GPU {', '.join(map(str, o.gpus))}" if o.gpus else "CPU only"
        held = ", ".join(f"{m.model} {m.memory_gib:.2f} GiB ({m.memory_source})" for m in o.models if m.memory_source != "none")
        console.print(f"ollama: {o.image} on {where}; pulls {', '.join(o.pull)}" + (f"; loaded: {held}" if held else ""))


def render_files(p: StackPlan) -> dict[str, str]:
    """Every file the components render, keyed by ``<component>/<file>``."""
    return {"plan.json": json.dumps(p.to_json(), indent=2, sort_keys=True) + "\n", **render_all(p)}


def console() -> Console:
    """A terminal gets rich's measured width (``$COLUMNS`` overrides it there); a pipe or a file gets whole lines."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=UNWRAPPED, highlight=False)


UNWRAPPED = 100_000
"""Width for output that is not a terminal: tables keep their natural width, and no line is cut for a log or grep."""


def _plan(args: argparse.Namespace) -> int:
    p = plan(load_stack(args.stack))
    if args.json:
        print(json.dumps(p.to_json(), indent=2, sort_keys=True))
    else:
        _print_plan(p, console())
    return 0


def _secrets_to_create(p: StackPlan) -> list[str]:
    """Lines naming the Secrets a GitOps user creates (render never writes one): name, keys, and where a value comes from."""
    assert p.kubernetes is not None, "only kubernetes stacks read Secrets from the cluster"
    by_secret: dict[str, list[str]] = {}
    for ref in kube_manifests.secret_refs(p):
        by_secret.setdefault(ref.secret, []).append(ref.key + (" (optional)" if ref.optional else ""))
    lines = [f"Secrets to create in namespace {p.kubernetes.namespace} (render writes none; see README, GitOps):"]
    width = max(len(name) for name in by_secret) if by_secret else 0
    lines += [f"  {name:<{width}}  keys: {', '.join(keys)}" for name, keys in sorted(by_secret.items())]
    return lines


def _render(args: argparse.Namespace) -> int:
    p = plan(load_stack(args.stack))
    try:
        report = render_dir.write_tree(args.out, render_files(p), args.stack)
    except render_dir.OutputError as err:
        print(f"render: {err}", file=sys.stderr)
        return 1
    done = [(rel, verb) for verb, paths in (("wrote", report.written), ("unchanged", report.unchanged), ("removed", report.removed)) for rel in paths]
    for rel, verb in sorted(done):
        print(f"{verb:<9} {args.out / rel}")
    for rel in report.kept:
        print(f"kept      {args.out / rel}  (no longer rendered, but changed since render wrote it: delete it yourself)")
    for note in report.notes:
        print(f"note: {note}")
    counts = f"{len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed"
    print(f"{len(report.written) + len(report.unchanged)} files under {args.out} ({counts}; {render_dir.MANIFEST} lists them)")
    if p.kubernetes:
        print("\n".join(_secrets_to_create(p)))
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def _keys_conf(args: argparse.Namespace) -> int:
    """keys.conf for the gateway-keys Secret when manifests are rendered (GitOps): keys come from the
    environment, never from arguments, so they stay out of shell history and process lists. The stack's maps size
    nginx's map hash together with the keys'."""
    p = plan(load_stack(args.stack))
    vllm_key = os.environ.get("VLLM_API_KEY", "")
    if not vllm_key:
        print("set VLLM_API_KEY (the vllm-api-key Secret's value) and, for a closed gateway, API_KEYS", file=sys.stderr)
        return 1
    # each endpoint's key from the variable the doctor reads too (apiKeySecret hostedKey: VLLM_STACK_HOSTED_KEY)
    secrets = [e.key_secret for e in p.endpoints if e.key_secret]
    missing = [key_variable(k) for k in secrets if not os.environ.get(key_variable(k))]
    if missing:
        print(f"set {', '.join(missing)} (the keys of the stack's endpoints)", file=sys.stderr)
        return 1
    endpoint_keys = endpoints.key_values(p, {k: os.environ[key_variable(k)] for k in secrets})
    try:
        sys.stdout.write(gateway.keys_conf(p, parse_api_keys(os.environ.get("API_KEYS", "")), vllm_key, endpoint_keys))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _print_checks(checks: list[Check], console: Console) -> None:
    """A table on a terminal; piped or redirected, one line per check (and one per fix), prose never padded into a table
    a thousand characters wide."""
    if console.width >= UNWRAPPED:
        for c in checks:
            console.print(f"{c.status:<4}  {c.area}: {c.name}: {c.detail}", markup=False)
            if c.fix:
                console.print(f"      fix: {c.fix}", markup=False)
    else:
        table = Table(title="vllm-stack doctor", title_justify="left", show_lines=False)
        for col in ("area", "check", "status", "found", "fix"):
            table.add_column(col, overflow="fold")
        for c in checks:
            style = STATUS_STYLE[c.status]
            table.add_row(c.area, c.name, f"[{style}]{c.status}[/]", c.detail, c.fix, style="dim" if c.status == "skip" else None)
        console.print(table)
    counts = {s: sum(c.status == s for c in checks) for s in STATUS_STYLE}
    console.print("checks: " + ", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)


def _doctor(args: argparse.Namespace) -> int:
    if not args.stack and not args.inventory:
        args.doctor_parser.error("name a STACK to check, or pass --inventory")
    if args.inventory:
        try:
            inv = local_probes().gpu.inventory()
        except ProbeError as e:
            print(f"{e.message}\nfix: {e.fix}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(inventory_json(inv), indent=2))
        else:
            sys.stdout.write(inventory_yaml(inv, socket.gethostname()))
        return 0 if inv.gpus else 1
    path = stack_file(args.stack)
    raw = read_stack_file(path)
    hf_token_set = "hfToken" in raw  # its value stays in the file (parse takes it out of the config)
    p = plan(parse(raw))
    checks = doctor(p, local_probes(provider_setting(path, "docker:host")), hf_token_set=hf_token_set)
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        _print_checks(checks, console())
    return 1 if any(c.status == "fail" for c in checks) else 0


def _config_reference(args: argparse.Namespace) -> int:
    sys.stdout.write(reference.render())
    return 0


def parser() -> argparse.ArgumentParser:
    """One sub-parser per command; each names the function that runs it (``run``)."""
    top = argparse.ArgumentParser(prog="python -m stacks", description="Plan and render vllm-stack stacks offline.")
    sub = top.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("plan", help="print the GPU plan of a stack")
    sp.add_argument("stack", help="stack name (Pulumi.<stack>.yaml at the repo root) or a stack file path")
    sp.add_argument("--json", action="store_true", help="print plan.json instead of tables (for scripts: stable keys, no wrapping)")
    sp.set_defaults(run=_plan)
    sr = sub.add_parser("render", help="write plan.json and every rendered file; removes files an earlier render wrote that are no longer rendered")
    sr.add_argument("stack")
    sr.add_argument("--out", required=True, type=Path, help="output folder (created when missing)")
    sr.set_defaults(run=_render)
    sub.add_parser("schema", help="print the JSON Schema of the stack config").set_defaults(run=_schema)
    sub.add_parser("config-reference", help="print the configuration reference (docs/configuration.md) in Markdown").set_defaults(run=_config_reference)
    sk = sub.add_parser(
        "keys-conf",
        help="print the gateway's keys.conf of a stack from $VLLM_API_KEY and $API_KEYS (comma-separated name:key entries), for Secrets you create yourself",
    )
    sk.add_argument(
        "stack",
        help="the stack the gateway belongs to (its maps and the keys size nginx's map hash together; its endpoints' keys come from VLLM_STACK_<APIKEYSECRET>)",
    )
    sk.set_defaults(run=_keys_conf)
    sd = sub.add_parser("doctor", help="check this machine against a stack before `pulumi up`; exits 1 when a check fails")
    sd.add_argument("stack", nargs="?", help="stack name or stack file path")
    sd.add_argument("--inventory", action="store_true", help="print this host's GPUs as the gpus block of a stack file")
    sd.add_argument("--json", action="store_true", help="print the checks (or the inventory) as JSON")
    sd.set_defaults(run=_doctor, doctor_parser=sd)
    return top


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when done, 1 for a mistake in the input (every problem listed), 2 for a bad command line or an internal error."""
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`plan dev | head`): stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if debugging():
            raise
        print(internal_error(err), file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
