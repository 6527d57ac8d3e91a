"""Markdown tables and figures from results.json (its "asr" and "comparison" parts, any number of fractions).

    markdown_tables(results)                   one table per fraction x split x decoding: per-language WER / CER of
                                               each system, the paired-bootstrap difference [95 % CI] and p-value
    plot_per_language(results, path)           per-language WER and CER bars, and the difference with its interval
    plot_wer_vs_fraction(results, path)        overall WER and CER against the fine-tuning fraction, per split
    write_report(results, output_dir)          report.md + plots/per_language.png + plots/wer_vs_fraction.png

Rates are stored as fractions and shown in %; differences in percentage points (a - b: negative means the first
system makes fewer errors).
"""

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

COMPARISON_FIELDS = ("metric", "difference", "ci_low", "ci_high", "p_value")
# the paired bootstraps results.json may hold: aligned - baseline (does alignment help?) and baseline - scratch (does
# stage 1 help? scratch = stage 3 from a randomly initialised encoder)
COMPARISON_KINDS = ("comparison", "scratch_comparison")
SIGNIFICANCE_LEVEL = 0.05


def percent(rate: float) -> str:
    return f"{100 * rate:.1f}"


def p_value_text(p_value: float) -> str:
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def fractions(results: Mapping) -> list[str]:
    """The fraction keys of every system, in increasing order."""
    keys = sorted({key for runs in results.get("asr", {}).values() for key in runs}, key=float)
    if not keys:
        raise ValueError("the results have no ASR scores (no 'asr' part): evaluate the models first")
    return keys


def compared_systems(entry: Mapping) -> list[str]:
    """The two system names of a comparison entry, in a - b order."""
    return [key for key in entry if key not in COMPARISON_FIELDS]


def comparison_for(results: Mapping, fraction: str, split: str, decoding: str, kind: str = "comparison") -> dict:
    """{group: entry} of one fraction, split and decoding; {} when the results compare nothing there. `kind`: one of
    `COMPARISON_KINDS`."""
    return results.get(kind, {}).get(fraction, {}).get(split, {}).get(decoding, {})


def runs_for(results: Mapping, fraction: str) -> dict[str, dict]:
    """{system: {split: {decoding: scores}}} of the systems evaluated at `fraction`."""
    return {system: runs[fraction] for system, runs in results["asr"].items() if fraction in runs}


def splits_of(runs: Mapping[str, Mapping]) -> list[str]:
    """The splits any system was evaluated on, in first-seen order."""
    return list(dict.fromkeys(split for system in runs.values() for split in system))


def decodings_of(runs: Mapping[str, Mapping]) -> list[str]:
    """The decodings any system was evaluated with, in first-seen order."""
    return list(dict.fromkeys(decoding for system in runs.values() for split in system.values() for decoding in split))


def scores_for(runs: Mapping[str, Mapping], split: str, decoding: str) -> dict[str, dict]:
    """{system: scores} of the systems evaluated on `split` with `decoding`."""
    return {system: splits[split][decoding] for system, splits in runs.items() if decoding in splits.get(split, {})}


def group_scores(scores: Mapping, group: str) -> dict | None:
    """A system's {"wer", "cer", "num_utterances"} for one language or "overall"; None when it has no such language."""
    return scores["overall"] if group == "overall" else scores["per_language"].get(group)


def groups_of(scores: Mapping[str, Mapping]) -> list[str]:
    """The languages of any system, sorted, then "overall"."""
    return sorted({language for system in scores.values() for language in system["per_language"]}) + ["overall"]


def table(results: Mapping, fraction: str, split: str, decoding: str) -> str:
    """One Markdown table: a row per language, then the overall row."""
    scores = scores_for(runs_for(results, fraction), split, decoding)
    comparisons = [comparison for kind in COMPARISON_KINDS
                   if (comparison := comparison_for(results, fraction, split, decoding, kind))]  # fmt: skip
    header = ["language", "utterances"] + [f"{system} {metric}" for system in scores for metric in ("WER", "CER")]
    for comparison in comparisons:
        a, b = compared_systems(comparison["overall"])
        header += [f"Δ {comparison['overall']['metric'].upper()} ({a} − {b}) [95 % CI]", "p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for group in groups_of(scores):
        rows = [group_scores(system, group) for system in scores.values()]
        num_utterances = max(row["num_utterances"] for row in rows if row)
        cells = [f"**{group}**" if group == "overall" else group, str(num_utterances)]
        cells += [percent(row[metric]) if row else "–" for row in rows for metric in ("wer", "cer")]
        for comparison in comparisons:
            entry = comparison.get(group)
            cells += [f"{percent(entry['difference'])} [{percent(entry['ci_low'])}, {percent(entry['ci_high'])}]",
                      p_value_text(entry["p_value"])] if entry else ["–", "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_tables(results: Mapping) -> str:
    """Every fraction x split x decoding table, each under a heading."""
    sections = ["WER / CER in %; Δ in percentage points, paired bootstrap over utterances (95 % percentile interval)."]
    for fraction in fractions(results):
        runs = runs_for(results, fraction)
        for split in splits_of(runs):
            for decoding in (d for d in decodings_of(runs) if scores_for(runs, split, d)):
                sections.append(f"### {split} · {decoding} decoding · fine-tuning fraction {fraction}\n\n"
                                + table(results, fraction, split, decoding))  # fmt: skip
    return "\n\n".join(sections) + "\n"


def _default_decoding(results: Mapping, fraction: str) -> str:
    """"tdt" when present, else the first decoding evaluated."""
    decodings = decodings_of(runs_for(results, fraction))
    return "tdt" if "tdt" in decodings else decodings[0]


def plot_per_language(results: Mapping, path: str | Path, fraction: str | None = None, decoding: str | None = None):
    """Per split (columns): WER and CER bars per language and system; with a comparison, a third row with the
    difference a - b and its 95 % bootstrap interval (filled bars: p < 0.05). Default: the largest fraction, TDT."""
    fraction = fraction or fractions(results)[-1]
    decoding = decoding or _default_decoding(results, fraction)
    runs = runs_for(results, fraction)
    splits = splits_of(runs)
    has_comparison = any(comparison_for(results, fraction, split, decoding) for split in splits)
    figure, axes = plt.subplots(
        3 if has_comparison else 2, len(splits), figsize=(4 + 3 * len(splits), 8 if has_comparison else 5.5),
        squeeze=False,
    )  # fmt: skip
    for column, split in enumerate(splits):
        scores = scores_for(runs, split, decoding)
        groups = groups_of(scores)
        width = 0.8 / len(scores)
        for row, metric in enumerate(("wer", "cer")):
            axis = axes[row, column]
            for index, (system, system_scores) in enumerate(scores.items()):
                rows = [group_scores(system_scores, group) for group in groups]
                values = [100 * row[metric] if row else float("nan") for row in rows]
                axis.bar([x + (index - (len(scores) - 1) / 2) * width for x in range(len(groups))], values, width,
                         label=system)  # fmt: skip
            axis.set_xticks(range(len(groups)), groups)
            axis.set_ylabel(f"{metric.upper()} (%)")
            axis.set_title(f"{split} · {decoding} · fraction {fraction}")
            axis.margins(y=0.25)  # room for the legend above the bars
            axis.legend(fontsize="small", ncols=len(scores), loc="upper center")
        if has_comparison:
            _plot_difference(axes[2, column], comparison_for(results, fraction, split, decoding), groups)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_difference(axis, comparison: Mapping, groups: list[str]) -> None:
    """Bars of a - b per group with their 95 % interval; hollow bars where the interval contains 0 (p >= 0.05)."""
    if not comparison:
        axis.set_axis_off()
        return
    groups = [group for group in groups if group in comparison]
    entries = [comparison[group] for group in groups]
    differences = [100 * entry["difference"] for entry in entries]
    errors = [[100 * (e["difference"] - e["ci_low"]) for e in entries],
              [100 * (e["ci_high"] - e["difference"]) for e in entries]]  # fmt: skip
    significant = [entry["p_value"] < SIGNIFICANCE_LEVEL for entry in entries]
    axis.bar(range(len(groups)), differences, 0.6, yerr=errors, capsize=4, edgecolor="black",
             color=["tab:green" if s else "none" for s in significant])  # fmt: skip
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(groups)), groups)
    a, b = compared_systems(entries[-1])
    axis.set_ylabel(f"Δ {entries[-1]['metric'].upper()} {a} − {b} (pp)")


def plot_wer_vs_fraction(results: Mapping, path: str | Path, decoding: str | None = None):
    """Overall WER (top) and CER (bottom) of each system against the fine-tuning fraction, one column per split."""
    keys = fractions(results)
    decoding = decoding or _default_decoding(results, keys[-1])
    splits = list(dict.fromkeys(split for key in keys for split in splits_of(runs_for(results, key))))
    figure, axes = plt.subplots(2, len(splits), figsize=(1 + 4 * len(splits), 6.5), squeeze=False)
    for column, split in enumerate(splits):
        for row, metric in enumerate(("wer", "cer")):
            axis = axes[row, column]
            for system, runs in results["asr"].items():
                points = [(float(k), 100 * runs[k][split][decoding]["overall"][metric]) for k in keys
                          if decoding in runs.get(k, {}).get(split, {})]  # fmt: skip
                if points:
                    axis.plot(*zip(*points), marker="o", label=system)
            axis.set_xscale("log")
            axis.set_xticks([float(k) for k in keys], keys)
            axis.minorticks_off()
            axis.set_xlabel("fine-tuning fraction of the transcribed set")
            axis.set_ylabel(f"{metric.upper()} (%)")
            axis.set_ylim(bottom=0)
            axis.set_title(f"{split} · {decoding}")
            axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    results: Mapping, output_dir: str | Path, preamble: str = "", suffix: str = "", postscript: str = ""
) -> list[Path]:
    """OUTPUT_DIR/report{suffix}.md (`preamble`, the tables, the figures, `postscript`) and
    OUTPUT_DIR/plots/*{suffix}.png; returns the paths. A suffix ("-roman") keeps a second report of the same run next
    to the first."""
    output_dir = Path(output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    names = ("per_language", "wer_vs_fraction")
    per_language, versus_fraction = (Path("plots") / f"{name}{suffix}.png" for name in names)  # relative to the report
    plot_per_language(results, output_dir / per_language)
    plot_wer_vs_fraction(results, output_dir / versus_fraction)
    report = output_dir / f"report{suffix}.md"
    report.write_text(
        preamble + "# ASR evaluation\n\n" + markdown_tables(results)
        + f"\n![per-language error rates]({per_language})\n\n![error rate against the fine-tuning fraction]"
        f"({versus_fraction})\n" + (f"\n{postscript}\n" if postscript else ""),
        encoding="utf-8",
    )  # fmt: skip
    return [report, output_dir / per_language, output_dir / versus_fraction]


NATIVE_VIEWS = {"cascade_char": "cascade: char transliterator", "cascade_lm": "cascade: LM prompted",
                "unified": "unified (speech → LM)", "no_speech": "no speech: a random sentence"}  # fmt: skip
CASCADES = ("cascade_char", "cascade_lm")
FREE_VIEWS = {"cascade_lm_free": "cascade_lm", "unified_free": "unified"}  # decoded free: {free view: held view}


def zero_shot_decoding(zero_shot: dict) -> str:
    """How the zero-shot evaluation read the romanizers and stage-3 models ("TDT" in results from before the choice)."""
    return next(iter(zero_shot.values())).get("decoding", "tdt").upper()


def zero_shot_table(zero_shot: dict) -> list[str]:
    """Languages never seen in fine-tuning (results["zero_shot"]): the romanizer's CER, then native-script CER through
    each cascade, the unified model and the no-speech control, the unified model against the best cascade and the
    control, the LM's outputs decoded free, and on the seen languages against the native-target stage-3 model;
    Markdown lines. (Views a run did not measure, e.g. in results from before the control, are left out.)"""
    cell = lambda e: f"{100 * e['cer']:.1f} [{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}]"  # noqa: E731
    first = next(iter(zero_shot.values()))
    views = [view for view in NATIVE_VIEWS if view in first]
    control = "no_speech" in first["unified_vs_cascade"][next(iter(first["roman"]))]
    lines = ["CER in % with its 95 % bootstrap interval over utterances; Δ: paired bootstrap. The LM cascade and the "
             "unified model write only the language's script (the language is given); *no speech* writes a random "
             "training-side sentence of the language for each utterance, hearing nothing.", "",
             "| held out | encoder | romanized | " + " | ".join(NATIVE_VIEWS[view] for view in views)
             + " | unified − best cascade |" + (" unified − no speech |" if control else ""),
             "|---|---|---:|" + "---:|" * (len(views) + 1 + control)]  # fmt: skip
    verdicts = []
    for language, entry in zero_shot.items():
        for system in entry["roman"]:
            best = min(CASCADES, key=lambda view: entry[view][system]["cer"])
            versus = entry["unified_vs_cascade"][system]
            lines.append(f"| {language} | {system} | {cell(entry['roman'][system])} | "
                         + " | ".join(cell(entry[view][system]) for view in views)
                         + f" | {difference_text(versus[best])} (vs {NATIVE_VIEWS[best].removeprefix('cascade: ')}) |"
                         + (f" {difference_text(versus['no_speech'])} |" if control else ""))  # fmt: skip
            verdicts.append(f"- {language}, {system} encoder: the unified model is {direction(versus[best])} the best "
                            f"cascade ({NATIVE_VIEWS[best]})" + (f", and {direction(versus['no_speech'])} the "
                            "no-speech control." if control else "."))  # fmt: skip
    lines += ["", *verdicts, "", "Aligned − baseline on the held-out language:", "",
              "| held out | output | Δ CER [95 % CI], p |", "|---|---|---:|"]  # fmt: skip
    for language, entry in zero_shot.items():
        lines += [f"| {language} | {view} | {difference_text(entry[f'{view}_comparison'])} |"
                  for view in ("roman", *views) if view != "no_speech"]  # fmt: skip
    free = [view for view in FREE_VIEWS if view in first]
    if free:
        lines += ["", "The LM's outputs decoded free (any script) against held to the language's script:", "",
                  "| held out | encoder | " + " | ".join(f"{FREE_VIEWS[v]}: free | {FREE_VIEWS[v]}: held" for v in free) + " |",
                  "|---|---|" + "---:|---:|" * len(free)]  # fmt: skip
        for language, entry in zero_shot.items():
            for system in entry["roman"]:
                lines.append(f"| {language} | {system} | " + " | ".join(
                    f"{cell(entry[v][system])} | {cell(entry[FREE_VIEWS[v]][system])}" for v in free) + " |")
    lines += ["", "The unified model on the seen languages' test utterances, against the native-target stage-3 model "
              f"({zero_shot_decoding(zero_shot)}, largest fraction):", "",
              "| held out | encoder | seen languages | unified | native stage 3 | unified − stage 3 |",
              "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for language, entry in zero_shot.items():
        for system, seen in entry.get("seen", {}).items():
            if seen:
                lines.append(f"| {language} | {system} | {', '.join(seen['languages'])} | {cell(seen['unified'])} | "
                             f"{cell(seen['native_stage3'])} | {difference_text(seen['comparison'])} |")  # fmt: skip
    counted = ["roman", *(view for view in views if view != "no_speech"), *free]
    lines += ["", "Distinct hypotheses / distinct references on the held-out language:", "",
              "| held out | encoder | " + " | ".join(counted) + " |", "|---|---|" + "---|" * len(counted)]
    for language, entry in zero_shot.items():
        for system in entry["roman"]:
            counts = [entry[view][system] for view in counted]
            lines.append(f"| {language} | {system} | " + " | ".join(
                f"{c['distinct_hypotheses']} / {c['distinct_references']}" for c in counts) + " |")
    examples = [(language, example) for language, entry in zero_shot.items() for example in entry.get("examples", ())]
    if examples:
        lines += ["", "Output on the first test utterances:", "",
                  "| held out | utterance | output | reference | aligned | baseline |", "|---|---|---|---|---|---|"]  # fmt: skip
        for language, example in examples:
            for view in ("roman", *views, *free):
                if f"reference_{view}" in example:
                    cells = [example.get(f"{key}_{view}", "") for key in ("reference", "aligned", "baseline")]
                    lines.append(f"| {language} | {example['utterance_id']} | {view} | " + " | ".join(cells) + " |")
    return lines


def direction(difference: Mapping) -> str:
    """A paired difference a - b in words: below, above, or not separable from (its interval holds 0)."""
    if difference["ci_high"] < 0:
        return "**better than** (interval below 0)"
    if difference["ci_low"] > 0:
        return "**worse than** (interval above 0)"
    return "not separable from (interval holds 0)"


# ------------------------------------------------------------------------------------------- the pipeline's report
# The demo's targets: what a run must show for its comparison to mean something.
TARGETS = {
    "in_domain_cer": 0.20,  # stage 3, aligned and baseline, largest fraction, test, TDT and CTC
    "out_of_domain_cer": 0.35,  # the same on test_ood
    "distinct_ratio": 0.5,  # every system writes >= this many distinct hypotheses per distinct reference
    "recall_over_chance": 10.0,  # stage 2: held-out audio -> image recall@1 over chance
    "audio_spread": 0.3,  # stage 2: the audio embeddings do not collapse
    "wall_minutes": 30.0,  # the whole run
}


def target_checks(results: Mapping) -> list[tuple[str, str, bool]]:
    """[(target, what was measured, met?)] for the run's results (the pipeline's results.json)."""
    checks = []
    keys = fractions(results)
    largest = keys[-1]
    for system in ("aligned", "baseline"):
        for split, limit in (("test", TARGETS["in_domain_cer"]), ("test_ood", TARGETS["out_of_domain_cer"])):
            for decoding in ("tdt", "ctc"):
                scores = results["asr"].get(system, {}).get(largest, {}).get(split, {}).get(decoding)
                cer = scores["overall"]["cer"] if scores else None
                checks.append((f"{system} f{largest} {split} {decoding.upper()} CER <= {percent(limit)} %",
                               "not run" if cer is None else f"{percent(cer)} %", cer is not None and cer <= limit))
    ratios = [(scores["overall"]["distinct_hypotheses"] / max(scores["overall"]["distinct_references"], 1),
               f"{system} f{key} {split} {decoding}")
              for system, runs in results["asr"].items() for key, splits in runs.items()
              for split, decodings in splits.items() for decoding, scores in decodings.items()]  # fmt: skip
    worst = min(ratios, default=None)
    if worst:
        checks.append((f"every system writes utterance-specific text (distinct hypotheses >= "
                       f"{TARGETS['distinct_ratio']:.0%} of distinct references)",
                       f"lowest ratio {worst[0]:.2f} ({worst[1]})", worst[0] >= TARGETS["distinct_ratio"]))  # fmt: skip
    for key in keys:
        for split in splits_of(runs_for(results, key)):
            for decoding in ("tdt", "ctc"):
                entry = comparison_for(results, key, split, decoding, "scratch_comparison").get("overall")
                if entry:
                    target = f"stage 1 helps: baseline − scratch CER < 0, 95 % CI, f{key} {split} {decoding.upper()}"
                    checks.append((target, difference_text(entry), entry["ci_high"] < 0))
    after = (results.get("align") or {}).get("recall_after") or {}
    if after:
        chance = 1 / max(after["num_images"], 1)
        checks.append((f"stage 2 aligns: recall@1 >= {TARGETS['recall_over_chance']:.0f}x chance",
                       f"{percent(after['recall@1'])} % = {after['recall@1'] / chance:.1f}x chance "
                       f"({after['num_images']} images)", after["recall@1"] >= TARGETS["recall_over_chance"] * chance))
        checks.append((f"stage 2 audio embedding spread >= {TARGETS['audio_spread']}", f"{after['audio_spread']:.3f}",
                       after["audio_spread"] >= TARGETS["audio_spread"]))  # fmt: skip
    minutes = sum(results.get("timings_seconds", {}).values()) / 60
    checks.append((f"wall time <= {TARGETS['wall_minutes']:.0f} min (stages of this report)", f"{minutes:.1f} min",
                   minutes <= TARGETS["wall_minutes"]))  # fmt: skip
    return checks


def difference_text(entry: Mapping) -> str:
    """"-12.3 [-15.0, -9.8] pp, p <0.001" from a comparison entry."""
    return (f"{100 * entry['difference']:+.1f} [{100 * entry['ci_low']:+.1f}, {100 * entry['ci_high']:+.1f}] pp, "
            f"p {p_value_text(entry['p_value'])}")


def targets_section(results: Mapping) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in target_checks(results):
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    return lines + ["", *alignment_verdict(results), ""]


def alignment_verdict(results: Mapping) -> list[str]:
    """Whether the paper's direction appears: aligned better than baseline (CER, interval below 0), per fraction and
    split, TDT and CTC; said plainly either way."""
    lines = ["Aligned − baseline, CER (negative: alignment helps), paired bootstrap over utterances:", ""]
    for key in fractions(results):
        for split in splits_of(runs_for(results, key)):
            for decoding in ("tdt", "ctc"):
                entry = comparison_for(results, key, split, decoding).get("overall")
                if entry:
                    verdict = ("aligned better" if entry["ci_high"] < 0 else "baseline better" if entry["ci_low"] > 0
                               else "no significant difference")  # fmt: skip
                    lines.append(f"- f{key} {split} {decoding.upper()}: {difference_text(entry)}: {verdict}")
    smallest = fractions(results)[0]
    entries = [comparison_for(results, smallest, "test_ood", d).get("overall") for d in ("tdt", "ctc")]
    shown = all(entry and entry["ci_high"] < 0 for entry in entries)
    lines += ["", f"The paper's direction (aligned better at the smallest fraction, out of domain, both decodings) "
              f"{'appears' if shown else 'does not appear'} in this run."]  # fmt: skip
    return lines


def plot_learning_curves(curves: Mapping, path: str | Path) -> None:
    """Dev metrics against the training step: stage 1 masked-token accuracy, stage 2 recall@1, stage 3 CTC and TDT
    CER of each system (curves: results["learning_curves"])."""
    panels = [("pretrain", "masked_accuracy", "stage 1: masked-token accuracy (dev)"),
              ("align", "recall@1", "stage 2: audio→image recall@1 (dev)"),
              ("asr/", "ctc_cer", "stage 3: CTC CER (dev)"), ("asr/", "tdt_cer", "stage 3: TDT CER (dev)")]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for axis, (prefix, metric, title) in zip(axes, panels):
        for name, history in curves.items():
            points = [(entry["step"], 100 * entry[metric]) for entry in history if metric in entry]
            if name.startswith(prefix) and points:
                axis.plot(*zip(*points), marker=".", label=name.removeprefix("asr/"))
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.set_ylabel("%")
        if axis.lines:
            axis.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_retrieval_examples(examples: list[Mapping], images: Mapping, path: str | Path) -> None:
    """One row per held-out clip: its prompt image, then the images the aligned audio embedding ranks first (with
    their cosine scores; a green frame marks the prompt image). images: {image_id: PIL image}."""
    columns = 1 + max(len(example["top_images"]) for example in examples)
    figure, axes = plt.subplots(len(examples), columns, figsize=(2.2 * columns, 2.4 * len(examples)), squeeze=False)
    for row, example in enumerate(examples):
        cells = [(example["image_id"], f"prompt ({example['language']})", None)]
        ranked = enumerate(zip(example["top_images"], example["top_scores"]))
        cells += [(image_id, f"#{rank + 1}  cos {score:.2f}", image_id == example["image_id"])
                  for rank, (image_id, score) in ranked]
        for axis, (image_id, title, correct) in zip(axes[row], cells):
            axis.imshow(images[image_id])
            axis.set_title(title, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
            if correct:
                for spine in axis.spines.values():
                    spine.set(color="tab:green", linewidth=4)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def distinct_table(results: Mapping) -> list[str]:
    """Markdown lines: distinct hypotheses / distinct references of every system, fraction, split and decoding (a
    system that writes one fixed string for every clip has 1)."""
    columns = list(dict.fromkeys((split, decoding) for runs in results["asr"].values() for splits in runs.values()
                                 for split, decodings in splits.items() for decoding in decodings))  # fmt: skip
    lines = ["| system | " + " | ".join(f"{split} {decoding.upper()}" for split, decoding in columns) + " |",
             "|---|" + "---:|" * len(columns)]  # fmt: skip
    for key in fractions(results):
        for system, splits in runs_for(results, key).items():
            cells = [splits.get(split, {}).get(decoding, {}).get("overall") for split, decoding in columns]
            lines.append(f"| {system} f{key} | " + " | ".join(
                f"{c['distinct_hypotheses']} / {c['distinct_references']}" if c else "–" for c in cells) + " |")
    return lines


def examples_section(results: Mapping, per_table: int = 8) -> list[str]:
    """Markdown tables: a few utterances per language as every system wrote them (TDT), next to the reference."""
    lines = ["## Example transcripts", ""]
    for key, by_split in results.get("examples", {}).items():
        for split, by_decoding in by_split.items():
            examples = by_decoding.get("tdt", [])[:per_table]
            if not examples:
                continue
            systems = [name for name in examples[0] if name not in ("utterance_id", "language", "reference")]
            lines += [f"### {split} · TDT · fraction {key}", "",
                      "| language | reference | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
            lines += [f"| {e['language']} | {e['reference']} | " + " | ".join(e[s] or "∅" for s in systems) + " |"
                      for e in examples]  # fmt: skip
            lines.append("")
    return lines
