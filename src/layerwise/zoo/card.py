"""Model cards: card.json (for programs), README.md (for people) and curve.png."""
from __future__ import annotations

import json
from pathlib import Path


def plot_curve(card: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = card.get("curve") or []
    if not curve:
        return
    if card.get("task", {}).get("name") == "zero-shot-digits":
        _plot_clip_curve(card, path, plt)
        return
    if card.get("task", {}).get("name") == "flow-matching":
        _plot_flow_curve(card, path, plt)
        return
    if card.get("task", {}).get("name") in ("flow-matching-images", "digit-judge", "flow-matching-pairs"):
        _plot_generic_curve(card, path, plt)
        return
    if "task" in card:
        _plot_task_curve(card, path, plt)
        return
    if "flops_per_image" in card:
        _plot_image_curve(card, path, plt)
        return
    tokens = [c["tokens"] / 1e6 for c in curve]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(tokens, [c["train_loss"] for c in curve], label="train loss (mean since last point)")
    ax[0].plot(tokens, [c["val_loss"] for c in curve], label="validation loss")
    ax[0].set_xlabel("tokens seen (M)")
    ax[0].set_ylabel("cross-entropy (nats)")
    ax[0].legend(fontsize=8)
    ax[1].plot(tokens, [c["val_ppl"] for c in curve], color="C1")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("tokens seen (M)")
    ax[1].set_ylabel("validation perplexity")
    fig.suptitle(f"{card['name']}: {card['parameters'] / 1e6:.2f}M params, {card['corpus']['source']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_task_curve(card: dict, path: Path, plt) -> None:
    steps = [c["step"] for c in card["curve"]]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(steps, [c["train_loss"] for c in card["curve"]])
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("task loss (last batch)")
    ax[1].plot(steps, [c["val_accuracy"] for c in card["curve"]], color="C1")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation answer accuracy")
    fig.suptitle(f"{card['name']}: {card['parameters'] / 1e6:.2f}M params, task {card['task']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_flow_curve(card: dict, path: Path, plt) -> None:
    steps = [c["step"] for c in card["curve"]]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(steps, [c["train_loss"] for c in card["curve"]])
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("velocity MSE (mean since last point)")
    ax[1].plot(steps, [c["accuracy"] for c in card["curve"]], color="C1", label="prompt accuracy")
    ax[1].plot(steps, [c["reward"] for c in card["curve"]], color="C2", label="reward")
    ax[1].set_xlabel("step")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"{card['name']}: {card['parameters']:,} params, {card['task']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_generic_curve(card: dict, path: Path, plt) -> None:
    """Training loss on the left, every other tracked quantity on the right (own axes)."""
    curve = card["curve"]
    xkey = "step" if "step" in curve[0] else "epoch"
    others = [k for k in curve[0] if k not in (xkey, "train_loss")]
    fig, ax = plt.subplots(1, 1 + len(others), figsize=(4.5 * (1 + len(others)), 3.4), squeeze=False)
    xs = [c[xkey] for c in curve]
    ax[0][0].plot(xs, [c["train_loss"] for c in curve])
    ax[0][0].set_xlabel(xkey)
    ax[0][0].set_ylabel("training loss")
    for a, k in zip(ax[0][1:], others):
        a.plot(xs, [c[k] for c in curve], color="C1")
        a.set_xlabel(xkey)
        a.set_ylabel(k.replace("_", " "))
    fig.suptitle(f"{card['name']}: {card['parameters']:,} params, {card['task']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_clip_curve(card: dict, path: Path, plt) -> None:
    curve = card["curve"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot([c["epoch"] for c in curve], [c["train_loss"] for c in curve], marker="o")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("contrastive loss (last batch)")
    ax[1].plot([c["epoch"] for c in curve], [c["val_zero_shot_accuracy"] for c in curve], color="C1", marker="o")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation zero-shot accuracy")
    fig.suptitle(f"{card['name']}: {card['parameters'] / 1e6:.3f}M params")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_image_curve(card: dict, path: Path, plt) -> None:
    curve = card["curve"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot([c["epoch"] for c in curve], [c["train_loss"] for c in curve])
    ax[0].set_yscale("log")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("training cross-entropy")
    pts = [c for c in curve if "val_accuracy" in c]
    ax[1].plot([c["epoch"] for c in pts], [c["val_accuracy"] for c in pts], color="C1", marker="o")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation accuracy")
    fig.suptitle(f"{card['name']}: {card['parameters'] / 1e6:.3f}M params, {card['flops_per_image'] / 1e6:.1f} MFLOPs/image")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_card_markdown(card: dict) -> str:
    t, e, d = card["training"], card["eval"], card["data"]
    return "\n".join([
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` " + ("(stock transformers) |" if card["architecture"].startswith("ViT")
                                                     else "(layerwise.models.resnet, a transformers PreTrainedModel) |"),
        f"| parameters | {card['parameters']:,}; {card['flops_per_image'] / 1e6:.2f} MFLOPs per image |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items())) + " |",
        f"| data | {d['source']}: {d['definition']}; canvas {d['size']}x{d['size']}"
        + (f", digits scaled x{d['scale']}" if d.get("scale", 1) > 1 else "") + f", noise {d['noise']}, "
        f"{d['copies']} canvases per digit; {d['train_images']} train / {d['validation_images']} validation / "
        f"{d['test_images']} test images |",
        f"| seed | {t['seed']} |",
        f"| training | {t['epochs']} epochs × batch {t['batch_size']}, {t['optimizer']}, lr {t['lr']}, {t['schedule']} |",
        f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| validation | accuracy **{e['validation']['accuracy']:.4f}**, NLL {e['validation']['nll']:.4f} |",
        f"| test | accuracy {e['test']['accuracy']:.4f}, NLL {e['test']['nll']:.4f} |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR` (bit-identical on the same machine type).",
        "", "![training curve](curve.png)", ""])


def task_card_markdown(card: dict) -> str:
    t, e, task = card["training"], card["eval"], card["task"]
    lines = [
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (stock transformers) |",
        f"| parameters | {card['parameters']:,} |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items())) + " |",
        f"| task | `{task['name']}`: {task['definition']}; length {task['length']}, {task['pairs']} records, "
        f"{task['queries']} queries, vocabulary {task['vocabulary']}; {task['generated']} |",
        f"| seed | {t['seed']} |",
        f"| steps | {t['steps']:,} × {t['batch_size']} sequences × {t['seqlen']} tokens |",
        f"| optimizer | {t['optimizer']}, lr {t['lr']}, {t['schedule']}, clip {t['grad_clip']} |",
        f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| validation answer accuracy | **{e['validation_accuracy']:.4f}** ({e['sequences']} sequences) |",
        f"| test answer accuracy | {e['test_accuracy']:.4f} |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR` (bit-identical on the same machine type).",
        "", "![training curve](curve.png)", "",
    ]
    return "\n".join(lines)


def vlm_card_markdown(card: dict) -> str:
    t, e, task = card["training"], card["eval"], card["task"]
    cfg = card["config"]
    return "\n".join([
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (stock transformers) |",
        f"| parameters | {card['parameters']:,} |",
        "| vision tower | " + ", ".join(f"{k}={v}" for k, v in sorted(cfg["vision"].items())) + " |",
        "| decoder | " + ", ".join(f"{k}={v}" for k, v in sorted(cfg["text"].items())) + " |",
        f"| task | `{task['name']}`: {task['definition']}; canvas {task['canvas']}x{task['canvas']}, noise "
        f"{task['noise']}, {task['vision_tokens']} vision tokens, sequence `{task['sequence']}`, vocabulary "
        f"{task['vocabulary']}; {task['generated']} |",
        f"| seed | {t['seed']} |",
        f"| steps | {t['steps']:,} × {t['batch_size']} questions (answer token supervised) |",
        f"| auxiliary loss | {t.get('auxiliary', 'none')} |",
        f"| optimizer | {t['optimizer']}, lr {t['lr']}, {t['schedule']}, clip {t['grad_clip']} |",
        f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| validation answer accuracy | **{e['validation']['accuracy']:.4f}** ({e['validation']['questions']} questions) |",
        f"| test answer accuracy | {e['test']['accuracy']:.4f} (NLL {e['test']['nll']:.4f}) |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR` (bit-identical on the same machine type).",
        "", "![training curve](curve.png)", ""])


def clip_card_markdown(card: dict) -> str:
    t, e, task, d = card["training"], card["eval"], card["task"], card["data"]
    cfg = card["config"]
    return "\n".join([
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (stock transformers) |",
        f"| parameters | {card['parameters']:,} |",
        "| image tower | " + ", ".join(f"{k}={v}" for k, v in sorted(cfg["vision"].items())) + " |",
        "| text tower | " + ", ".join(f"{k}={v}" for k, v in sorted(cfg["text"].items()))
        + f"; joint space {cfg['projection_dim']} |",
        f"| data | {d['source']}: {d['definition']}; canvas {d['size']}x{d['size']}, digits scaled x{d.get('scale', 1)}, "
        f"noise {d['noise']}, {d['copies']} canvases per digit, {d['train_images']} training pairs |",
        f"| task | `{task['name']}`: {task['definition']} |",
        "| training captions | " + "; ".join(f"`{x}`" for x in task["training_templates"]) + " |",
        "| zero-shot prompts | " + "; ".join(f"`{x}`" for x in task["zero_shot_templates"]) + " |",
        f"| seed | {t['seed']} |",
        f"| training | {t['epochs']} epochs × batch {t['batch_size']} ({t['steps']:,} steps), {t['loss']}, "
        f"{t['optimizer']}, lr {t['lr']}, {t['schedule']}, clip {t['grad_clip']} |",
        f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| validation zero-shot accuracy | **{e['validation']['accuracy']:.4f}** ({e['validation']['n']} images; "
        f"training templates {e['validation']['seen_templates_accuracy']:.4f}) |",
        f"| test zero-shot accuracy | {e['test']['accuracy']:.4f} (NLL {e['test']['nll']:.4f}; training templates "
        f"{e['test']['seen_templates_accuracy']:.4f}) |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR` (bit-identical on the same machine type). "
        f"Evaluate: `layerwise eval zoo:{card['name']} --data digits --split test`.",
        "", "![training curve](curve.png)", ""])


def flow_card_markdown(card: dict) -> str:
    t, e, d = card["training"], card["eval"], card["data"]
    return "\n".join([
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (layerwise.models.flow, a transformers PreTrainedModel) |",
        f"| parameters | {card['parameters']:,} |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items())) + " |",
        f"| data | {d['source']}: radius {d['radius']}, std {d['std']}, label noise {d['label_noise']} |",
        f"| task | {card['task']['definition']} |",
        f"| seed | {t['seed']} |",
        f"| training | {t['steps']:,} steps × batch {t['batch_size']}, {t['optimizer']}, lr {t['lr']}, {t['schedule']}, "
        f"clip {t['grad_clip']} |",
        f"| wall time | {t['wall_time_s']:.0f} s on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| sampler | {e['sampler']} |",
        f"| prompt accuracy | **{e['accuracy']:.4f}** (nearest mode = prompt, {e['samples']} samples) |",
        f"| mean reward | {e['reward']:.4f} (reward {e['reward_fn']}) |",
        f"| diversity | {e['diversity']:.4f} (mean pairwise distance of a prompt's samples) |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR` (bit-identical on the same machine type). "
        f"Align: `layerwise rl zoo:{card['name']} --algo branchgrpo --reward gmm --out DIR`.",
        "", "![samples](samples.png)", "", "![training curve](curve.png)", ""])


def _stack_rows(t: dict) -> list[str]:
    return [f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
            f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |"]


def judge_card_markdown(card: dict) -> str:
    t, e, d = card["training"], card["eval"], card["data"]
    return "\n".join([
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (layerwise.models.resnet, a transformers PreTrainedModel) |",
        f"| parameters | {card['parameters']:,} |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items())) + " |",
        f"| data | {d['source']}; {d['train_images']} training digits; augmentation {d['augment']} |",
        f"| seed | {t['seed']} |",
        f"| training | {t['epochs']} epochs × batch {t['batch_size']} ({t['steps']:,} steps), {t['optimizer']}, "
        f"lr {t['lr']}, {t['schedule']} |", *_stack_rows(t),
        f"| validation accuracy | {e['validation']['accuracy']:.4f} ({e['validation']['n']} digits) |",
        f"| test accuracy | **{e['test']['accuracy']:.4f}** (NLL {e['test']['nll']:.4f}, {e['test']['n']} digits) |",
        "", f"Retrain: `layerwise zoo train {card['name']} --out DIR`.", "", "![training curve](curve.png)", ""])


def _diffusers_rows(card: dict, data_rows: list[str]) -> list[str]:
    """The rows every diffusers generator's card shares, up to its sampler."""
    t, e = card["training"], card["eval"]
    return [
        f"# {card['name']}", "", card["description"], "", "| | |", "|---|---|",
        f"| architecture | `{card['architecture']}` (stock diffusers) |",
        f"| parameters | {card['parameters']:,} |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items())) + " |",
        *data_rows,
        f"| task | {card['task']['definition']} |",
        f"| seed | {t['seed']} |",
        f"| training | {t['steps']:,} steps × batch {t['batch_size']}, {t['optimizer']}, lr {t['lr']}, {t['schedule']}, "
        f"clip {t['grad_clip']} |", *_stack_rows(t)[:-1],
        f"| stack | Python {t['python']}, torch {t['torch']}, diffusers {t.get('diffusers', '?')} |",
        f"| sampler | {e['sampler']} |"]


_GENERATOR_TAIL = ["", "Retrain: `layerwise zoo train {name} --out DIR` (bit-identical on the same machine type).",
                   "", "![samples](samples.png)", "", "![training curve](curve.png)", ""]


def generator_card_markdown(card: dict) -> str:
    e, d = card["eval"], card["data"]
    return "\n".join(_diffusers_rows(card, [f"| data | {d['source']}; {d['train_images']} training digits |"]) + [
        f"| prompt accuracy (judge {e['judge']}) | **{e['sde']['prompt_accuracy']:.4f}** SDE (eta {e['sde']['eta']}), "
        f"{e['ode']['prompt_accuracy']:.4f} ODE ({e['sde']['samples']} samples each) |",
        f"| Fréchet distance on judge features | {e['sde']['frechet_distance']:.3f} SDE, {e['ode']['frechet_distance']:.3f} "
        f"ODE, vs {e['frechet_reference']}; two halves of the real digits: {e['frechet_floor']:.3f} |",
        *[r.format(name=card["name"]) for r in _GENERATOR_TAIL]])


def pairs_card_markdown(card: dict) -> str:
    e, d = card["eval"], card["data"]
    return "\n".join(_diffusers_rows(card, [f"| data | {d['source']} |", f"| prompts | {d['prompts']} |"]) + [
        f"| prompt consistency (judge {e['judge']}; {e['prompts']}) | **{e['sde']['consistency']:.4f}** SDE "
        f"(eta {e['sde']['eta']}), {e['ode']['consistency']:.4f} ODE ({e['sde']['samples']} samples each) |",
        f"| both digits found, two-digit prompts | {e['sde']['both_digits_rate']:.4f} SDE, "
        f"{e['ode']['both_digits_rate']:.4f} ODE |",
        *[r.format(name=card["name"]) for r in _GENERATOR_TAIL]])


def card_markdown(card: dict) -> str:
    if card.get("task", {}).get("name") == "flow-matching-pairs":
        return pairs_card_markdown(card)
    if card.get("task", {}).get("name") == "flow-matching":
        return flow_card_markdown(card)
    if card.get("task", {}).get("name") == "digit-judge":
        return judge_card_markdown(card)
    if card.get("task", {}).get("name") == "flow-matching-images":
        return generator_card_markdown(card)
    if card.get("task", {}).get("name") == "zero-shot-digits":
        return clip_card_markdown(card)
    if card.get("task", {}).get("name") == "quadrant-vqa":
        return vlm_card_markdown(card)
    if "task" in card:
        return task_card_markdown(card)
    if "flops_per_image" in card:
        return image_card_markdown(card)
    t, e, c = card["training"], card["eval"], card["corpus"]
    cfg = card["config"]
    lines = [
        f"# {card['name']}",
        "",
        card["description"],
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{card['architecture']}` (stock transformers) |",
        f"| parameters | {card['parameters']:,} |",
        "| config | " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.items())) + " |",
        f"| corpus | `{c['source']}` — Python {c.get('python', '?')}, {c['documents']} documents, "
        f"{c['characters']:,} characters; train split sha256 `{c['train']['sha256'][:16]}…` |",
        f"| tokenizer | {card['tokenizer']['type']}, {card['tokenizer']['vocab_size']} tokens, "
        f"trained on {card['tokenizer']['trained_on']} |",
        f"| seed | {t['seed']} |",
        f"| steps | {t['steps']:,} × {t['batch_size']} × {t['seqlen']} tokens |",
        f"| tokens seen | {t['tokens_seen']:,} ({t['epochs']:.1f} epochs of the train split) |",
        f"| optimizer | {t['optimizer']}, lr {t['lr']}, {t['schedule']}, clip {t['grad_clip']} |",
        f"| wall time | {t['wall_time_s'] / 60:.1f} min on {t['machine']}, {t['threads']} threads, {t['precision']} |",
        f"| stack | Python {t['python']}, torch {t['torch']}, transformers {t['transformers']} |",
        f"| validation perplexity | **{e['perplexity']:.3f}** ({e['windows']} windows × {e['seqlen']} tokens, "
        f"{e['tokens']:,} scored tokens) |",
        f"| test perplexity | {e['test_perplexity']:.3f} |",
        "",
        "Reproduce the validation number: `layerwise eval zoo:%s --data stdlib`." % card["name"],
        "",
        "![training curve](curve.png)",
        "",
    ]
    return "\n".join(lines)


def save_zoo_model(art, model, card: dict, tokenizer=None, extra=None) -> None:
    """Write a trained zoo model into its artifact: weights, tokenizer, card files (and `extra(dir)`:
    more figures), then the atomic commit."""
    tmp = art.begin()
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    write_card_files(tmp, card)
    if extra is not None:
        extra(tmp)
    art.commit()


def write_card_files(directory: Path, card: dict) -> None:
    directory = Path(directory)
    (directory / "card.json").write_text(json.dumps(card, indent=1, sort_keys=False) + "\n")
    (directory / "README.md").write_text(card_markdown(card))
    plot_curve(card, directory / "curve.png")
