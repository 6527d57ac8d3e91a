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


def comparison_for(results: Mapping, fraction: str, split: str, decoding: str) -> dict:
    """{group: entry} of one fraction, split and decoding; {} when the results compare nothing there."""
    return results.get("comparison", {}).get(fraction, {}).get(split, {}).get(decoding, {})


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
    comparison = comparison_for(results, fraction, split, decoding)
    header = ["language", "utterances"] + [f"{system} {metric}" for system in scores for metric in ("WER", "CER")]
    if comparison:
        a, b = compared_systems(comparison["overall"])
        header += [f"Δ {comparison['overall']['metric'].upper()} ({a} − {b}) [95 % CI]", "p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for group in groups_of(scores):
        rows = [group_scores(system, group) for system in scores.values()]
        num_utterances = max(row["num_utterances"] for row in rows if row)
        cells = [f"**{group}**" if group == "overall" else group, str(num_utterances)]
        cells += [percent(row[metric]) if row else "–" for row in rows for metric in ("wer", "cer")]
        if comparison and group in comparison:
            entry = comparison[group]
            cells += [f"{percent(entry['difference'])} [{percent(entry['ci_low'])}, {percent(entry['ci_high'])}]",
                      p_value_text(entry["p_value"])]  # fmt: skip
        elif comparison:
            cells += ["–", "–"]
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


def write_report(results: Mapping, output_dir: str | Path, preamble: str = "", suffix: str = "") -> list[Path]:
    """OUTPUT_DIR/report{suffix}.md (`preamble`, the tables and the figures) and OUTPUT_DIR/plots/*{suffix}.png;
    returns the paths. A suffix ("-roman") keeps a second report of the same run next to the first."""
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
        f"({versus_fraction})\n",
        encoding="utf-8",
    )  # fmt: skip
    return [report, output_dir / per_language, output_dir / versus_fraction]


def zero_shot_table(zero_shot: dict) -> list[str]:
    """CER of languages never seen in fine-tuning (results["zero_shot"]): romanized output, then native script after
    de-romanization; Markdown lines."""
    lines = ["CER in %; Δ = aligned − baseline with its 95 % paired-bootstrap interval.", "",
             "| held out | script | aligned CER | baseline CER | Δ [95 % CI] | p |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for language, entry in zero_shot.items():
        for script in ("roman", "native"):
            difference = entry[f"{script}_comparison"]
            lines.append(
                f"| {language} | {script} | {100 * entry[script]['aligned']['cer']:.1f} | "
                f"{100 * entry[script]['baseline']['cer']:.1f} | {100 * difference['difference']:+.1f} "
                f"[{100 * difference['ci_low']:+.1f}, {100 * difference['ci_high']:+.1f}] | {difference['p_value']:.3f} |"
            )
    examples = [(language, example) for language, entry in zero_shot.items() for example in entry.get("examples", ())]
    if examples:
        lines += ["", "Output on the first test utterances (romanized, then native script):", "",
                  "| held out | utterance | script | reference | aligned | baseline |", "|---|---|---|---|---|---|"]  # fmt: skip
        for language, example in examples:
            for script in ("roman", "native"):
                cells = [example.get(f"{key}_{script}", "") for key in ("reference", "aligned", "baseline")]
                lines.append(f"| {language} | {example['utterance_id']} | {script} | " + " | ".join(cells) + " |")
    return lines
