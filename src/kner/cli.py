"""The ``kner`` command: parses arguments and calls the library; no logic of its own."""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

from . import data as kdata
from . import analysis_report, models, stream
from . import recipe as krecipe
from .distributed import is_main_process
from .extras import MissingExtraError, needs_extra
from .scoring import Scores, score

_TYPES = {"int": int, "float": float, "str": str}


def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each dataclass field, used as its ``--help`` text."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body, docs = tree.body[0].body, {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--flag`` per field of a family's config dataclass (the single home of hyperparameters)."""
    docs = field_docs(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} hyperparameters")
    for f in dataclasses.fields(config_cls):
        type_name = str(f.type).replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")
        flag = "--" + f.name.replace("_", "-")
        # argparse reads % in help as a format directive ("30% slower" would break -h).
        help_text = f"{docs.get(f.name, '')} (default: {f.default})".strip().replace("%", "%%")
        if type_name == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=_TYPES.get(type_name, str), default=None, help=help_text)


def _data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help=f"KLUE NER release folder (else ${kdata.ENV_VAR}, else the Hugging Face hub)")


def _selection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="NAME", help=f"named settings ({', '.join(krecipe.names())}) or a .toml "
                        "file; flags given here override it")
    parser.add_argument("--valid-fraction", type=float, default=kdata.VALID_FRACTION,
                        help="share of train held out as the validation split that chooses the epoch and tuned settings")
    parser.add_argument("--select-on", choices=kdata.SELECT_ON, default="validation",
                        help="dev chooses on the sentences the model is reported on: optimistic, and labelled so")


def build_parser(family_flags: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``family_flags`` names the one family whose config flags ``train`` needs
    (importing a family imports torch or transformers, so only the chosen one is imported)."""
    parser = argparse.ArgumentParser(prog="kner", description="Korean NER on KLUE: train, evaluate, compare, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model family and save a self-describing run directory")
    fam = train.add_subparsers(dest="family", required=True, metavar="FAMILY")
    for name in models.names():
        p = fam.add_parser(name, help=f"train a model of the {name} family")
        _data_flags(p)
        p.add_argument("--out", required=True, help="run directory to write")
        p.add_argument("--train-limit", type=int, help="use only the first N training sentences")
        p.add_argument("--dev-limit", type=int, help="use only the first N dev sentences")
        _selection_flags(p)
        p.add_argument("--hold-out", action="store_true",
                       help="families that choose nothing on validation (crf): leave it out of training all the "
                            "same, so the run can join an ensemble")
        p.add_argument("--refit", action="store_true",
                       help="epoch-trained families: after choosing the epoch count and tuned settings on validation, "
                            "train again from scratch on train and validation together with those choices (the "
                            "saved model has seen validation, so it cannot join an ensemble)")
        if name == family_flags:
            add_config_flags(p, models.get(name).Config)

    ev = sub.add_parser("evaluate", help="score a run directory on the dev split (or on its validation split)")
    ev.add_argument("run_dir")
    _data_flags(ev)
    ev.add_argument("--on", choices=["dev", "validation"], default="dev",
                    help="validation: the sentences the run held out of train, for error analysis and choosing "
                         "settings without reading dev (its figures lean optimistic: the run chose its epoch there)")
    ev.add_argument("--limit", type=int, help="use only the first N sentences")
    ev.add_argument("--errors", action="store_true",
                    help="also give the error kinds, examples and type confusion (the benchmark report's analysis)")
    ev.add_argument("--json", action="store_true", help="print a JSON object instead of a table")

    pr = sub.add_parser("predict", help="tag texts with a trained model")
    pr.add_argument("run_dir")
    pr.add_argument("texts", nargs="*", help="texts to tag")
    pr.add_argument("--input", help="a UTF-8 file with one text per line (- reads standard input); "
                                    "read, tagged and written a batch at a time")
    pr.add_argument("--output", help="write the results here instead of printing them")
    pr.add_argument("--format", choices=["markup", "json"],
                    help="markup: <이순신:PS> inline (\\< \\> escape literal brackets); json: one JSON object "
                         "per line with the spans (default: json with --output, else markup)")
    pr.add_argument("--batch-size", type=int, default=256, help="texts tagged and written together")
    for p in (ev, pr):
        _runtime_flags(p)

    bench = sub.add_parser("benchmark", help="train (or reuse), evaluate and time model families; write a report")
    bench.add_argument("--models", required=True, help=f"comma-separated families: {','.join(models.names())}")
    _data_flags(bench)
    bench.add_argument("--out", required=True, help="folder for models, report.md, report.json and plots")
    bench.add_argument("--train-limit", type=int, help="cap training sentences for every model")
    bench.add_argument("--dev-limit", type=int, help="cap dev sentences for every model")
    bench.add_argument("--set", action="append", default=[], metavar="FAMILY.FIELD=VALUE",
                       help="override a hyperparameter, e.g. --set crf.c1=0.1 (repeatable)")
    bench.add_argument("--retrain", action="store_true", help="train again even if OUT/models/FAMILY exists")
    bench.add_argument("--repeats", type=int, default=3, help="timed passes over dev; the median is reported")
    bench.add_argument("--seeds", type=_seeds, default=1, metavar="N|FAMILY=N,...",
                       help="train each seeded family N times (seed, seed+1, ...), or name a count per family "
                            "(the others once): mean, sd and best are reported")
    bench.add_argument("--resume", action="store_true", help="keep the models and seeds OUT/parts/ already holds "
                       "from an unfinished run with the same settings; run only the rest")
    bench.add_argument("--monitor-dev", action="store_true", help="also score dev after each epoch, for the record "
                       "only, to measure how much choosing the epoch on dev would overstate F1")
    bench.add_argument("--train-sizes", type=_train_sizes, default=(), metavar="N,N,...[,all]",
                       help="learning curves: also train each family on the first N training sentences for each N "
                            "(validation held out of them as usual), e.g. 1000,2000,5000,10000,all; the full run "
                            "('all') is always the last point")
    bench.add_argument("--curve-models", metavar="FAMILY,...", help="learning curves for these families only "
                       "(default: every benchmarked family)")
    _selection_flags(bench)

    res = sub.add_parser("results", help="print the README's results table from a benchmark's report.json")
    res.add_argument("report", help="report.json written by kner benchmark")
    res.add_argument("--readme", help="write the table into this file between its results markers instead")

    # --- serving and publishing (kner.serve, kner.hub, kner.onnx_backend) ---
    srv = sub.add_parser("serve", help="HTTP API (POST /predict, GET /models) and a web page at / for run directories")
    srv.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="models to load; each is named after its folder")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-chars", type=int,
                     help="longest text accepted, in characters (longer: HTTP 413; GET /models shows the limit)")
    srv.add_argument("--max-batch", type=int,
                     help="most texts in one request (more: HTTP 413; GET /models shows the limit)")
    srv.add_argument("--backend", default="torch",
                     help="runtime for bert runs: torch, or onnx = onnxruntime on the 'kner export-onnx' output")
    _runtime_flags(srv)

    push = sub.add_parser("push", help="publish a run directory to the Hugging Face Hub with a generated model card")
    push.add_argument("run_dir")
    push.add_argument("--repo", required=True, help="repository to create or update, as USER/NAME")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hugging Face token (else $HF_TOKEN or the cached login)")
    push.add_argument("--dry-run", action="store_true", help="print the model card and file list; upload nothing")

    onnx = sub.add_parser("export-onnx", help="export a bert run's network to ONNX for onnxruntime inference")
    onnx.add_argument("run_dir")
    onnx.add_argument("--out", help="folder for model.onnx (default: RUN_DIR/onnx, where kner serve --backend onnx looks)")
    onnx.add_argument("--opset", type=int, help="ONNX opset version (default: kner.onnx_backend.OPSET)")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    cls = models.get(args.family)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    recipe = krecipe.load(args.recipe) if args.recipe else None
    overrides, run = krecipe.resolve(recipe, args.family, cls.Config, {k: v for k, v in vars(args).items() if k in names})
    if "checkpoint_dir" in names and "checkpoint_dir" not in overrides:
        overrides["checkpoint_dir"] = str(Path(args.out) / "checkpoints")
    if args.refit and not cls.epoch_trained:
        raise ValueError(f"--refit trains again for the epoch count chosen on validation; {args.family} chooses no "
                         "epoch (drop --refit)")
    if args.refit and args.select_on == "dev":
        raise ValueError("--refit with --select-on dev would train on the sentences the model is scored on; "
                         "drop one of them")
    splits = kdata.prepare_splits(args.data, args.train_limit or run.get("train_limit"),
                                  args.dev_limit or run.get("dev_limit"), args.select_on, args.valid_fraction,
                                  hold_out=cls.selects or args.hold_out, chooses=cls.selects)
    tagger = cls(**overrides)
    tagger.provenance = {"selection": splits.selection, "recipe": recipe and recipe["name"]}
    tagger.fit(splits.train, splits.valid)
    dev, extra = splits.dev, {}
    if args.refit:  # the held-out run is scored on dev too, to report what the refit bought; it chooses nothing
        if is_main_process():
            extra["before_refit"] = _metrics(score(dev, tagger.predict([ex.text for ex in dev])))
        tagger = models.refit(tagger, splits.train, splits.valid)
    if not is_main_process():
        return
    scores = score(dev, tagger.predict([ex.text for ex in dev]))
    n_train = len(splits.train) + (len(splits.valid) if args.refit else 0)
    tagger.save(args.out, metrics={**_metrics(scores), "n_train": n_train, "n_valid": len(splits.valid),
                                   "n_dev": len(dev), **extra})
    before = f"; before the refit {extra['before_refit']['f1']:.4f}" if extra else ""
    print(f"saved {args.family} to {args.out}: dev micro F1 {scores.f1:.4f}{before} ({len(dev)} sentences; "
          f"{tagger.provenance['selection']['note']})")
    checkpoints = Path(overrides.get("checkpoint_dir") or "")
    if checkpoints.name and checkpoints.is_dir():  # the optimizer's state makes them several times the model
        size = sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file()) / 2**20
        print(f"checkpoints for --resume: {checkpoints} ({size:,.0f} MB); delete the folder once nothing needs resuming")


def _metrics(s: Scores) -> dict:
    d = s.to_dict()
    return {k: d[k] for k in ("f1", "precision", "recall", "klue_entity_macro_f1", "klue_char_macro_f1", "per_type")}


def _runtime_flags(parser: argparse.ArgumentParser) -> None:
    """Settings that change how a saved model runs, not what it learned (``kner.load`` overrides)."""
    parser.add_argument("--precision", metavar="{auto,fp32,bf16,fp16}",
                        help="run torch models in this precision instead of the saved one (bf16 pays on CPUs with bf16 instructions)")
    parser.add_argument("--pretokenize", metavar="{auto,none,morphemes}",
                        help="bert models: read raw text (none) or Kiwi morphemes, instead of the saved setting")
    parser.add_argument("--recall-bias", type=float, metavar="B",
                        help="bilstm-crf models: lower the O tag's scores by B before decoding (> 0 trades precision for recall)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="crf models: tag large batches in N processes (0: one per CPU core)")
    parser.add_argument("--predict-batch-size", type=int, metavar="N",
                        help="torch models: texts run through the model together (on a GPU larger batches pay)")
    parser.add_argument("--draft-tokens", type=int, metavar="N",
                        help="sllm models: copied tokens checked per forward pass (0: one pass per token)")


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` given on the command line; the rest keep the library's defaults."""
    return {k: v for k in names if (v := getattr(args, k, None)) is not None}


def _runtime(args: argparse.Namespace) -> dict:
    return _given(args, "precision", "pretokenize", "recall_bias", "workers", "predict_batch_size", "draft_tokens")


def cmd_evaluate(args: argparse.Namespace) -> None:
    fraction = None
    if args.on == "validation":  # a run that trained on it is refused before its model loads
        fraction = kdata.held_out_fraction(models.read_meta(args.run_dir).get("provenance", {}).get("selection") or {})
    tagger = models.load(args.run_dir, **_runtime(args))
    gold = (kdata.load_validation(args.data, fraction, args.limit) if fraction
            else kdata.load_split("dev", args.data, args.limit))
    predicted = tagger.predict([ex.text for ex in gold])
    scores = score(gold, predicted)
    errors = analysis_report.model_errors(gold, predicted) if args.errors else None
    if args.json:
        print(json.dumps({**_metrics(scores), "split": args.on, "n_sentences": len(gold)}
                         | ({"errors": errors} if errors else {}), ensure_ascii=False, indent=2))
        return
    print(f"{tagger.family} on {len(gold)} {args.on} sentences ({scores.n_gold} gold entities)")
    print(f"{'':8}{'P':>8}{'R':>8}{'F1':>8}{'support':>9}")
    print(f"{'micro':8}{scores.precision:8.4f}{scores.recall:8.4f}{scores.f1:8.4f}{scores.n_gold:9d}")
    for label, t in scores.per_type.items():
        print(f"{label:8}{t.precision:8.4f}{t.recall:8.4f}{t.f1:8.4f}{t.support:9d}")
    print(f"KLUE entity macro F1 {scores.klue_entity_macro_f1:.4f}   KLUE char macro F1 {scores.klue_char_macro_f1:.4f}")
    if errors:
        print("\n" + analysis_report.errors_markdown(tagger.family, errors, args.on))


def cmd_predict(args: argparse.Namespace) -> None:
    if not args.texts and not args.input:
        raise SystemExit("kner predict: give texts as arguments or --input FILE (one text per line; - for stdin)")
    tagger = models.load(args.run_dir, **_runtime(args))
    as_json = (args.format or ("json" if args.output else "markup")) == "json"
    with open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout) as out:
        stream.predict_texts(tagger.predict, args.texts, args.input, out, args.batch_size, as_json)


def _parse_sets(items: list[str]) -> dict[str, dict[str, object]]:
    overrides: dict[str, dict[str, object]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        family, dot, field = key.partition(".")
        if not (eq and dot):
            raise SystemExit(f"kner benchmark: --set {item!r} must look like FAMILY.FIELD=VALUE, e.g. crf.c1=0.1")
        config = models.get(family).Config
        types = {f.name: str(f.type) for f in dataclasses.fields(config)}
        if field not in types:
            raise SystemExit(f"kner benchmark: {family} has no hyperparameter {field!r}; see 'kner train {family} -h'")
        overrides.setdefault(family, {})[field] = _coerce(value, types[field])
    return overrides


def _coerce(value: str, type_name: str) -> object:
    if value.lower() == "none" and "None" in type_name:
        return None
    if type_name.startswith("bool"):
        return value.lower() in ("1", "true", "yes", "on")
    for name, typ in _TYPES.items():
        if type_name.startswith(name):
            return typ(value)
    return value


def cmd_serve(args: argparse.Namespace) -> None:
    with needs_extra("kner serve"):
        from .serve import serve

        serve(args.run_dirs, host=args.host, port=args.port, backend=args.backend, runtime=_runtime(args),
              **_given(args, "max_chars", "max_batch"))


def cmd_push(args: argparse.Namespace) -> None:
    with needs_extra("kner push"):
        from .hub import push

        plan = push(args.run_dir, args.repo, private=args.private, token=args.token, dry_run=args.dry_run)
    if args.dry_run:
        print(plan.card)
        print(f"would upload to {plan.repo_id}: README.md (the card above), {', '.join(plan.files)}")
    else:
        print(f"uploaded {len(plan.files) + 1} files to {plan.url}")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    with needs_extra("kner export-onnx"):
        from .onnx_backend import export_onnx

        path = export_onnx(args.run_dir, args.out, **_given(args, "opset"))
    print(f"wrote {path} (checked against torch: {path.with_name('onnx.json')})")


def _seeds(spec: str) -> int | dict[str, int]:
    """``--seeds``: ``3``, or ``bilstm-crf=3,bert=1``."""
    try:
        if "=" not in spec:
            return int(spec)
        return {family.strip(): int(n) for family, _, n in (item.partition("=") for item in spec.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not N or FAMILY=N,... (e.g. 3 or bilstm-crf=3,bert=1)") from None


def _train_sizes(spec: str) -> list[int]:
    """``--train-sizes``: ``1000,2000,all``; ``all`` names the full run, which always runs."""
    try:
        return [int(n) for n in (item.strip() for item in spec.split(",")) if n and n != "all"]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a list of sentence counts (e.g. 1000,2000,5000,all)") from None


def cmd_benchmark(args: argparse.Namespace) -> None:
    families = [m.strip() for m in args.models.split(",") if m.strip()]
    for family in families:
        models.get(family)  # unknown names and bad overrides fail before any training starts
    overrides = _parse_sets(args.set)
    from .benchmark import BenchmarkError, run_benchmark

    try:
        run_benchmark(families, args.data, args.out, train_limit=args.train_limit, dev_limit=args.dev_limit,
                      overrides=overrides, reuse=not args.retrain, repeats=args.repeats,
                      recipe=krecipe.load(args.recipe) if args.recipe else None, seeds=args.seeds,
                      resume=args.resume, select_on=args.select_on, valid_fraction=args.valid_fraction,
                      monitor_dev=args.monitor_dev, train_sizes=args.train_sizes,
                      curve_families=args.curve_models and [m.strip() for m in args.curve_models.split(",")])
    except BenchmarkError as exc:
        raise SystemExit(f"kner benchmark: {exc} (see {Path(args.out) / 'report.md'})") from exc
    print(f"wrote {Path(args.out) / 'report.md'}")


def cmd_results(args: argparse.Namespace) -> None:
    from . import report

    try:
        table = report.results_table(json.loads(Path(args.report).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, StopIteration) as exc:
        raise SystemExit(f"kner results: {args.report} is not a kner benchmark report.json ({exc!r})") from exc
    if not args.readme:
        print(table)
        return
    readme = Path(args.readme)
    readme.write_text(report.replace_results(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"wrote the results table into {readme}")


COMMANDS = {"results": cmd_results, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "benchmark": cmd_benchmark,
            "serve": cmd_serve, "push": cmd_push, "export-onnx": cmd_export_onnx}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "kner"
    try:
        _run(argv)
    except MissingExtraError as exc:
        raise SystemExit(f"kner {command}: {exc}") from exc
    except BrokenPipeError:
        # The reader went away (`kner predict ... | head`): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


def _run(argv: list[str]) -> None:
    # Family modules (torch, transformers) are imported only when their flags are needed.
    parser = build_parser(argv[1] if len(argv) > 1 and argv[0] == "train" and argv[1] in models.names() else None)
    args, rest = parser.parse_known_args(argv)
    # argparse stops filling ``texts`` at the first option; texts after options arrive here.
    if args.command == "predict" and not any(r.startswith("--") for r in rest):
        args.texts += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # The training log (one line per epoch: loss, validation F1, seconds) goes to stderr.
    logger = logging.getLogger("kner")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        COMMANDS[args.command](args)
    except BrokenPipeError:
        raise
    except (kdata.DataError, models.ModelDirError, KeyError, ValueError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise SystemExit(f"kner {args.command}: {message}") from exc
