"""`halm eval-t2a`: generate audio for a manifest's captions with a t2a run and score it with the judge.

    halm eval-t2a --run RUN --captions MANIFEST [--n N] [--cfg 3.0] [--seed S] [--seconds S] [--json]

MANIFEST: any captioned source (a halm synth corpus folder or a JSONL manifest) whose clips are the
reference audio. The first N captioned clips are used (sorted by id, so the set is reproducible); one
clip is generated per caption (batched, seeded: deterministic for a seed). Scores, all in the judge's
embedding space (halm.judge; the shipped one unless --judge):
- fad: Fréchet distance between the reference and the generated clips' audio embeddings, with its
  bootstrap spread (N is small next to the 256 dimensions: compare FADs only at equal N);
- fad_inf: FAD∞, the 1/N extrapolation of FAD over subsets of the generated clips (fadtk's
  correction, halm.metrics.t2a.fad_inf): comparable across N, still an estimate at small N;
- kl: mean KL(p_ref || p_gen) of the attribute heads' posteriors (averaged over attributes), the
  reference clip and the clip generated from its caption paired (the RR paper's protocol);
- clap: mean cosine between each caption's text embedding and its generated clip's audio embedding;
- controllability: per attribute, the share of generated clips the judge classifies as the caption says;
  `order` (two-event captions) counts both events right and in order;
- reference: clap and controllability of the reference clips themselves (the ceilings);
- reference_codec: the same for the reference clips encoded and decoded by the run's codec with the
  model's n_q codebooks (plus their FAD to the originals): the ceiling that generated audio can reach;
- per_caption: one row per caption (id, text, the caption's attributes, the judge's reading of the
  generated and of the reference clip, each clip's CLAP cosine).
cfg 0 samples from the null condition alone (the text is ignored): the null-caption floor.
Pretrained scorers replace the judge for one score each when their weights are on disk
(halm/metrics/external.py): `fad_model` vggish:FILE | clap:DIR | laion-clap:FILE, `kl_model` ast:DIR,
`clap_model` clap:DIR | laion-clap:FILE. `models` in the result names the scorer of each score; when
any is not the judge, the judge's own three scores are kept under `judge` (controllability is always
the judge's).
Writes OUT/report.md, OUT/results.json, OUT/samples/*.wav and OUT/spectrograms.png (first 4 pairs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from halm.errors import UserError


def captioned_items(captions: str, n: int) -> list:
    """The first n captioned items of a source, sorted by id (a reproducible set); at least 2."""
    from halm.data import open_source

    items = sorted((it for it in open_source(captions) if (it.text or "").strip()), key=lambda it: it.id)[:n]
    if len(items) < 2:
        raise UserError(f"{captions}: need at least 2 captioned clips, found {len(items)}")
    return items


def judged_targets(judge, ref_clips: list[dict]) -> dict[str, list]:
    """Per attribute the captions' values the judge can check (None where a count's hits run past its window);
    attributes no clip states are left out."""
    targets = {k: [None if k in c["late"] else c["attributes"].get(k) for c in ref_clips] for k in judge.cfg.attributes}
    return {k: v for k, v in targets.items() if any(x is not None for x in v)}


def judged_predictions(judge, post: dict, targets: dict) -> dict[str, list]:
    return {k: [judge.cfg.attributes[k][int(i)] for i in post[k].argmax(-1)] for k in targets}


def judged_controllability(judge, post: dict, targets: dict) -> dict[str, float]:
    """Per attribute the share of clips the judge reads as their caption says (`order`: both events in order)."""
    from halm.judge import with_order
    from halm.metrics.t2a import attribute_accuracy

    p = judged_predictions(judge, post, targets)
    return with_order(attribute_accuracy(p, targets), p, targets)


def through_codec(codec, n_q: int, items, wavs: list[tuple[np.ndarray, int]], judge) -> list[dict]:
    """The judge's clips of `wavs` encoded and decoded by `codec` with its first n_q codebooks."""
    import torch

    from halm.audio import mono_at
    from halm.judge import clip_from_wav

    out = []
    for it, (wav, sr) in zip(items, wavs):
        x = torch.from_numpy(mono_at(wav, sr, codec.sample_rate))[None, None]  # (1, 1, N), moved by encode
        with torch.no_grad():
            y = codec.decode(codec.encode(x, codec.sample_rate)[:, :n_q])[0, 0].float().cpu().numpy()
        out.append(clip_from_wav(y, codec.sample_rate, it.text, it.attributes, judge.cfg.n_mels, it.id))
    return out


def eval_t2a(run: str, captions: str, out: str | None = None, n: int = 32, cfg_coef: float = 3.0, seed: int = 0,
             seconds: float | None = None, judge_dir: str | None = None, batch: int = 8, progress: bool = True,
             fad_model: str = "judge", kl_model: str = "judge", clap_model: str = "judge",
             codec_ceiling: bool = True, device="cpu") -> dict:
    from halm.generate import codec_of_run, text_to_audio
    from halm.judge import (
        _sentence_embeddings,
        clip_from_wav,
        embed_clips,
        judge_hash,
        load_judge,
    )
    from halm.metrics.external import load_scorer
    from halm.metrics.t2a import clap_score, fad_bootstrap, fad_inf, kl_divergence
    from halm.runs import load_run

    model, rc = load_run(run, device=device)  # generation runs on `device`; the judge scores on the CPU
    if rc["family"] != "t2a":
        raise UserError(f"{run} is a {rc['family']} run; eval-t2a scores text-to-audio runs")
    judge = load_judge(judge_dir)
    models = {"fad": fad_model or "judge", "kl": kl_model or "judge", "clap": clap_model or "judge"}
    scorers = {role: load_scorer(spec, role) for role, spec in models.items()}  # fail early, before generating
    items = captioned_items(captions, n)
    from halm.audio import load_audio

    ref, ref_wavs = [], []  # only the N scored reference clips are read
    for it in items:
        wav, sr = load_audio(it.path)
        ref.append(clip_from_wav(wav, sr, it.text, it.attributes, judge.cfg.n_mels, it.id))
        ref_wavs.append((wav, sr))
    seconds = seconds or judge.cfg.seconds
    gen, wavs = [], []
    from tqdm import tqdm

    for i in tqdm(range(0, len(items), batch), desc="eval-t2a generate", disable=not progress, dynamic_ncols=True):
        chunk = items[i:i + batch]
        g = text_to_audio(model, rc, [it.text for it in chunk], seconds, cfg_coef=cfg_coef, seed=seed + i)
        for it, wav in zip(chunk, g["audio"]):
            gen.append(clip_from_wav(wav, g["sample_rate"], it.text, it.attributes, judge.cfg.n_mels, it.id))
            wavs.append((it.id, wav, g["sample_rate"]))
    ref_emb, ref_post = embed_clips(judge, ref)
    gen_emb, gen_post = embed_clips(judge, gen)
    if codec_ceiling:  # the references through the run's codec and its n_q codebooks: what generation can reach
        codec = codec_of_run(rc, device=next(model.parameters()).device)
        codec_emb, codec_post = embed_clips(judge, through_codec(codec, model.cfg.n_q, items, ref_wavs, judge))
    text = judge.text_embed(_sentence_embeddings([it.text for it in items], judge.cfg.text_encoder)).detach()
    targets = judged_targets(judge, ref)

    def predicted(post):
        return judged_predictions(judge, post, targets)

    def controllability(post):
        return judged_controllability(judge, post, targets)

    fad = fad_bootstrap(ref_emb.numpy(), gen_emb.numpy(), n_boot=100, seed=seed)
    finf = fad_inf(ref_emb.numpy(), gen_emb.numpy(), seed=seed)["fad_inf"] if len(items) >= 6 else None
    gen_pred, ref_pred = predicted(gen_post), predicted(ref_post)
    t_np, g_np, r_np = text.numpy(), gen_emb.numpy(), ref_emb.numpy()
    per_caption = [{"id": it.id, "text": it.text, "target": {k: targets[k][i] for k in targets},
                    "generated": {k: gen_pred[k][i] for k in targets}, "reference": {k: ref_pred[k][i] for k in targets},
                    "clap": float(t_np[i] @ g_np[i]), "reference_clap": float(t_np[i] @ r_np[i])}
                   for i, it in enumerate(items)]
    kls = {k: kl_divergence(ref_post[k].numpy(), gen_post[k].numpy()) for k in targets}
    result = {"run": str(run), "captions": str(captions), "n": len(items), "cfg": cfg_coef, "seed": seed,
              "seconds": seconds, "judge_dir": str(judge_dir or "halm-small"), "judge_version": judge.cfg.version,
              "judge_sha256": judge_hash(judge_dir), "fad": fad["fad"], "fad_std": fad["std"], "fad_inf": finf,
              "kl": float(np.mean(list(kls.values()))), "kl_per_attribute": kls,
              "clap": clap_score(text.numpy(), gen_emb.numpy()),
              "controllability": controllability(gen_post),
              "reference": {"clap": clap_score(text.numpy(), ref_emb.numpy()), "controllability": controllability(ref_post)}}
    if codec_ceiling:
        cf = fad_bootstrap(ref_emb.numpy(), codec_emb.numpy(), n_boot=100, seed=seed)
        result["reference_codec"] = {
            "n_q": model.cfg.n_q, "clap": clap_score(text.numpy(), codec_emb.numpy()),
            "controllability": controllability(codec_post), "fad": cf["fad"], "fad_std": cf["std"],
            "fad_inf": fad_inf(ref_emb.numpy(), codec_emb.numpy(), seed=seed)["fad_inf"] if len(items) >= 6 else None}
    if any(scorers.values()):
        result["judge"] = {k: result[k] for k in ("fad", "fad_std", "fad_inf", "kl", "clap")} | {
            "reference_clap": result["reference"]["clap"]}
        gen_wavs = [(w, sr) for _, w, sr in wavs]
        if s := scorers["fad"]:
            fr, fg = s.frame_embeddings(ref_wavs), s.frame_embeddings(gen_wavs)
            f = fad_bootstrap(fr, fg, n_boot=100, seed=seed)
            result.update(fad=f["fad"], fad_std=f["std"], fad_inf=fad_inf(fr, fg, seed=seed)["fad_inf"] if len(fg) >= 6 else None)
        if s := scorers["kl"]:
            result.update(kl=kl_divergence(s.posteriors(ref_wavs), s.posteriors(gen_wavs), multilabel=s.multilabel))
            result.pop("kl_per_attribute")
        if s := scorers["clap"]:
            t = s.text_embeddings([it.text for it in items])
            result["clap"] = clap_score(t, s.clip_embeddings(gen_wavs))
            result["reference"]["clap"] = clap_score(t, s.clip_embeddings(ref_wavs))
    result["per_caption"] = per_caption
    result["models"] = {role: (s.name if s else f"judge:{judge_dir or 'halm-small'}") for role, s in scorers.items()}
    if out:
        _write_report(Path(out), result, wavs, ref, gen)
    return result


def _num(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def _write_report(out: Path, r: dict, wavs, ref, gen):
    from halm.audio import save_audio
    from halm.plots import plot_spectrogram_pairs

    out.mkdir(parents=True, exist_ok=True)
    for cid, wav, sr in wavs:
        save_audio(out / "samples" / f"{cid}.wav", wav, sr)
    rows = [(f'"{g["text"][:80]}"', c["mel"].T.numpy(), g["mel"].T.numpy(), 50.0) for c, g in list(zip(ref, gen))[:4]]
    plot_spectrogram_pairs(rows, out / "spectrograms.png", ("reference", "generated"))
    lines = [f"# eval-t2a: {r['run']}", "",
             f"{r['n']} captions of {r['captions']}, CFG {r['cfg']}, seed {r['seed']}, {r['seconds']} s each; judge "
             f"{r['judge_dir']} (version {r['judge_version']}, weights sha256 {r['judge_sha256'][:16]}; halm/judge.py).",
             "",
             "| metric | scorer | generated | reference (ceiling) | reference through the codec |",
             "|---|---|---|---|---|"]
    rc = r.get("reference_codec") or {}

    def cc(key, fmt):
        return fmt(rc[key]) if rc.get(key) is not None else "—"

    lines += [f"| FAD | {r['models']['fad']} | {r['fad']:.4f} ± {r['fad_std']:.4f} | 0 | {cc('fad', lambda v: f'{v:.4f}')} |",
              f"| FAD∞ | {r['models']['fad']} | {_num(r['fad_inf'])} | 0 | {cc('fad_inf', _num)} |",
              f"| KL(ref ‖ gen) | {r['models']['kl']} | {r['kl']:.3f} | 0 | |",
              f"| CLAP score | {r['models']['clap']} | {r['clap']:.3f} | {r['reference']['clap']:.3f} | "
              f"{cc('clap', lambda v: f'{v:.3f}')} |"]
    for k, v in r["controllability"].items():
        codec = f"{100 * rc['controllability'][k]:.1f}%" if rc else "—"
        lines.append(f"| controllability: {k} | judge | {100 * v:.1f}% | {100 * r['reference']['controllability'][k]:.1f}% "
                     f"| {codec} |")
    lines += ["", "![reference vs generated](spectrograms.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
