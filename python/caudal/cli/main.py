"""The ``caudal`` command: run, resume, inspect and validate YAML pipelines.

    caudal run pipeline.yaml --registry mymod:REGISTRY --input '{"x": 1}' [--store PATH]
    caudal resume RUN_ID --registry mymod:REGISTRY --store PATH
    caudal inspect RUN_ID --store PATH
    caudal runs --store PATH
    caudal validate pipeline.yaml --registry mymod:REGISTRY

``--registry module:attr`` names a dict {name: callable or Step} importable
from the working directory (searched after the installed packages, so a
``yaml.py`` there never replaces PyYAML). ``--store`` is a SQLite path or a
``postgresql://`` URI (default: $CAUDAL_STORE, else .caudal/checkpoints.db).
``run`` and ``resume`` also take ``--cache-redis URL`` (the shared cache
tier), ``--backend ray`` (steps that do not choose run on Ray) and
``--ray-address ADDR`` (the cluster to join; default: Ray's own choice,
``$RAY_ADDRESS`` or a cluster started on this machine) — docs/scale-out.md.
A run stores its YAML, so ``resume`` needs the run id and ``--registry`` (and
``--resolver`` if the pipeline has one): code is imported only from what the
command line names, never from the store, which reports the stored specs.
Exit status: 0 success; 1 a failed run, an invalid pipeline, an unknown run;
2 bad arguments (a module, attribute or file that cannot be found
included); 130 interrupted (C-c), after printing the command that resumes
the run. Every error is one line on stderr; ``CAUDAL_TRACEBACK=1`` adds the
traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shlex
import sys
import time
import traceback
import uuid
from typing import Any, NoReturn

from caudal.cli.output import Progress, json_text, problems_of, report
from caudal.cli.where import close_executor, executor_for, resume_where, store_label, where_of
from caudal.errors import (
    CaudalError,
    PipelineDefinitionError,
    RunNotFoundError,
    UsageLimitExceededError,
)
from caudal.pipeline.stores import open_store
from caudal.pipeline.yaml import load_pipeline


def _cwd_last() -> None:
    """The working directory holds the ``--registry``/``--resolver`` modules
    (and what they import), but never shadows an installed package: a
    ``yaml.py`` next to the pipeline must not replace PyYAML. So it is
    searched last. ``python -m caudal.cli`` puts it first: moved."""
    cwd = os.getcwd()
    if sys.path and sys.path[0] in ("", cwd):
        del sys.path[0]
    if cwd not in sys.path:
        sys.path.append(cwd)


def _bad_argument(message: str) -> NoReturn:
    """A bad command-line argument: one line on stderr, exit status 2."""
    print(f"caudal: {message}", file=sys.stderr)
    raise SystemExit(2)


def _import_spec(spec: str, what: str) -> Any:
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        _bad_argument(f"{what} must be module:attribute, got {spec!r}")
    _cwd_last()
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        _bad_argument(f"cannot import {mod_name!r} for {what}: {exc}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _bad_argument(f"{mod_name!r} has no attribute {attr!r} ({what})")
    return obj


def _registry(spec: str) -> dict:
    reg = _import_spec(spec, "--registry")
    if callable(reg) and not isinstance(reg, dict):
        reg = reg()
    if not isinstance(reg, dict):
        _bad_argument(f"--registry {spec} is not a dict of name -> step")
    return reg


def _load(yaml_text_or_path: str, registry_spec: str, resolver_spec: str | None) -> Any:
    registry = _registry(registry_spec)
    resolver = _import_spec(resolver_spec, "--resolver") if resolver_spec else None
    p = load_pipeline(yaml_text_or_path, registry, resolver=resolver)
    p.source = dict(p.source or {}, registry=registry_spec, resolver=resolver_spec)
    return p


async def _cmd_run(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.input) if args.input is not None else None
    except json.JSONDecodeError as exc:
        print(f"caudal: --input is not valid JSON: {exc}", file=sys.stderr)
        return 2
    p = _load(args.pipeline, args.registry, args.resolver)
    p.source = dict(p.source, where=where_of(args))
    executor = executor_for(args)
    progress = Progress(len(p), not args.no_progress)
    # Chosen here, so that an interrupted run can be named (main()).
    args.run_id = args.run_id or uuid.uuid4().hex
    try:
        run = await p.run(
            data,
            run_id=args.run_id,
            store=args.store,
            executor=executor,
            max_concurrency=args.max_concurrency,
            on_step=progress,
        )
    except UsageLimitExceededError as exc:
        progress.close()
        print(f"caudal: {exc}", file=sys.stderr)
        return report(exc.run, args.json) or 1
    finally:
        await close_executor(executor)
    progress.close()
    return report(run, args.json)


async def _cmd_resume(args: argparse.Namespace) -> int:
    st, owned = open_store(args.store)
    try:
        stored = await st.load_run(args.run_id)
    finally:
        if owned:
            await st.close()
    src = stored.info.definition or {}
    # Code runs only from what the user names here: the specs stored with the
    # run are data anyone who can write to the store could have changed, so
    # they are reported, never imported.
    stored_registry, stored_resolver = src.get("registry"), src.get("resolver")
    if not args.registry:
        hint = f" (it was started with --registry {stored_registry})" if stored_registry else ""
        print(
            f"caudal: resume needs --registry module:attr{hint}; the spec stored "
            "with a run is never imported",
            file=sys.stderr,
        )
        return 2
    registry_spec, resolver_spec = args.registry, args.resolver
    for flag, given, was in (
        ("--registry", registry_spec, stored_registry),
        ("--resolver", resolver_spec, stored_resolver),
    ):
        if was and given != was:
            now = f"resuming with {flag} {given}" if given else f"resuming without {flag}"
            print(f"caudal: note: the run was started with {flag} {was}; {now}", file=sys.stderr)
    if args.pipeline:
        definition = args.pipeline
    elif src.get("yaml"):
        definition = src["yaml"]
    else:
        print("caudal: this run has no stored pipeline; give --pipeline FILE", file=sys.stderr)
        return 2
    problem = resume_where(args, src.get("where") or {})
    if problem:
        print(f"caudal: {problem}", file=sys.stderr)
        return 2
    p = _load(definition, registry_spec, resolver_spec)
    p.source = dict(src, registry=registry_spec, resolver=resolver_spec, where=where_of(args))
    restored = sum(1 for c in stored.steps.values() if c.status in ("completed", "failed_optional"))
    progress = Progress(len(p), not args.no_progress, restored=restored)
    executor = executor_for(args)
    try:
        run = await p.resume(
            args.run_id,
            store=args.store,
            executor=executor,
            max_concurrency=args.max_concurrency,
            on_step=progress,
        )
    except UsageLimitExceededError as exc:
        progress.close()
        print(f"caudal: {exc}", file=sys.stderr)
        return report(exc.run, args.json) or 1
    finally:
        await close_executor(executor)
    progress.close()
    return report(run, args.json)


def _step_names(definition: dict | None) -> list[str]:
    if not definition or not definition.get("yaml"):
        return []
    try:
        import yaml

        doc = yaml.safe_load(definition["yaml"])
        return [s["name"] for s in doc.get("steps", []) if isinstance(s, dict) and "name" in s]
    except Exception:
        return []


async def _cmd_inspect(args: argparse.Namespace) -> int:
    st, owned = open_store(args.store)
    try:
        stored = await st.load_run(args.run_id)
    finally:
        if owned:
            await st.close()
    info = stored.info
    names = _step_names(info.definition)
    for n in stored.steps:
        if n not in names:
            names.append(n)
    rows = []
    for n in names:
        cp = stored.steps.get(n)
        if cp is None:
            rows.append({"step": n, "status": "not run", "attempts": 0, "latency_s": None})
            continue
        rows.append(
            {
                "step": n,
                "status": "failed (optional)" if cp.status == "failed_optional" else cp.status,
                "attempts": cp.attempts,
                "latency_s": cp.latency_s,
                "started_at": cp.started_at,
                "finished_at": cp.finished_at,
                "cache_hit": cp.cache_hit,
                "tokens": cp.tokens,
                "cost_usd": cp.cost_usd,
                "error": cp.error,
            }
        )
    if args.json:
        print(
            json_text(
                {
                    "run_id": info.run_id,
                    "pipeline": info.pipeline,
                    "status": info.status,
                    "created_at": info.created_at,
                    "updated_at": info.updated_at,
                    "resumes": info.resumes,
                    "error": info.error,
                    "steps": rows,
                }
            )
        )
        return 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_at))
    print(f"run {info.run_id}  pipeline {info.pipeline}  status {info.status}")
    print(f"created {created}  resumed {info.resumes} time(s)")
    if info.error:
        print(f"error: {info.error}")
    w = max([4, *(len(r["step"]) for r in rows)])
    print(f"{'step':<{w}}  {'status':<17}  {'attempts':>8}  {'time ms':>9}  {'tokens':>7}  error")
    for r in rows:
        t = "" if r.get("latency_s") is None else f"{r['latency_s'] * 1000:.1f}"
        print(
            f"{r['step']:<{w}}  {r['status']:<17}  {r['attempts']:>8}  {t:>9}  "
            f"{r.get('tokens') or '':>7}  {r.get('error') or ''}"
        )
    return 0


async def _cmd_runs(args: argparse.Namespace) -> int:
    st, owned = open_store(args.store)
    try:
        runs = await st.list_runs(args.limit)
    finally:
        if owned:
            await st.close()
    for info in runs:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_at))
        print(f"{info.run_id}  {info.status:<14}  {created}  {info.pipeline}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        p = load_pipeline(args.pipeline, _registry(args.registry), require_resolver=False)
    except PipelineDefinitionError as exc:
        for line in problems_of(exc):
            print(line, file=sys.stderr)
        return 1
    levels = p.levels()
    print(f"{args.pipeline}: ok ({len(p)} steps in {len(levels)} levels)")
    for k, level in enumerate(levels):
        print(f"  level {k}: {', '.join(level)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="caudal", description="Run and inspect caudal pipelines.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common_run(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="SQLite path or postgresql:// URI")
        p.add_argument("--resolver", help="module:attr of an async resolver(text, context)")
        p.add_argument("--max-concurrency", type=int, default=None)
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--json", action="store_true", help="machine-readable outcome")
        p.add_argument("--cache-redis", metavar="URL", help="the shared cache tier (redis://...)")
        p.add_argument(
            "--backend",
            choices=("local", "ray"),
            help="where steps that do not choose a backend run (default: local)",
        )
        p.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster to join (ray.init)")

    r = sub.add_parser("run", help="run a YAML pipeline")
    r.add_argument("pipeline", help="pipeline YAML file")
    r.add_argument("--registry", required=True, help="module:attr, a dict name -> step")
    r.add_argument("--input", help="the pipeline input, as JSON")
    r.add_argument("--run-id", help="id for the new run (default: random)")
    common_run(r)

    s = sub.add_parser("resume", help="resume a stored run")
    s.add_argument("run_id")
    s.add_argument("--pipeline", help="YAML file (default: the one stored with the run)")
    s.add_argument(
        "--registry",
        help="module:attr, a dict name -> step (required: the spec stored with the run "
        "is never imported)",
    )
    common_run(s)

    i = sub.add_parser("inspect", help="show a stored run's steps")
    i.add_argument("run_id")
    i.add_argument("--store", help="SQLite path or postgresql:// URI")
    i.add_argument("--json", action="store_true")

    ls = sub.add_parser("runs", help="list stored runs, newest first")
    ls.add_argument("--store", help="SQLite path or postgresql:// URI")
    ls.add_argument("--limit", type=int, default=20)

    v = sub.add_parser("validate", help="check a YAML pipeline")
    v.add_argument("pipeline")
    v.add_argument("--registry", required=True, help="module:attr, a dict name -> step")
    return ap


def main(argv: list[str] | None = None) -> int:
    _cwd_last()
    import yaml  # noqa: F401 - the installed PyYAML, before any user module is imported

    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            return _cmd_validate(args)
        cmd = {
            "run": _cmd_run,
            "resume": _cmd_resume,
            "inspect": _cmd_inspect,
            "runs": _cmd_runs,
        }[args.command]
        return asyncio.run(cmd(args))
    except PipelineDefinitionError as exc:
        for line in problems_of(exc):
            print(line, file=sys.stderr)
        return 1
    except RunNotFoundError as exc:
        print(f"caudal: {_one_line(exc)} ({store_label(args.store)})", file=sys.stderr)
        return 1
    except CaudalError as exc:
        print(f"caudal: {_one_line(exc)}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:  # the pipeline file, or a store's folder
        print(f"caudal: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"caudal: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("CAUDAL_TRACEBACK"):
            traceback.print_exc()
        else:
            print(
                f"caudal: {type(exc).__name__}: {_one_line(exc)} (CAUDAL_TRACEBACK=1 shows where)",
                file=sys.stderr,
            )
        return 1


def _one_line(exc: BaseException) -> str:
    """An error's text on one line (a driver's message may span several)."""
    return " ".join(str(exc).split())


def _resume_hint(args: argparse.Namespace) -> str:
    """After an interrupted run or resume: the command that resumes it."""
    if args.command not in ("run", "resume") or not getattr(args, "run_id", None):
        return ""
    cmd = ["caudal", "resume", args.run_id, "--registry", args.registry]
    if args.resolver:
        cmd += ["--resolver", args.resolver]
    if args.store:
        cmd += ["--store", args.store]
    return "; the completed steps are checkpointed. Resume with: " + shlex.join(cmd)
