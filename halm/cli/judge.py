"""`halm` commands: judging generated audio: `judge train`, `judge eval`, `eval-t2a`, `listen`."""

from __future__ import annotations

import json
from pathlib import Path

from halm.cli.common import add_device, add_json, defaults


def cmd_judge_train(args) -> int:
    from halm.judge import train_judge

    r = train_judge(args.data, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                    heldout=args.heldout, progress=not args.json, device=args.device, ckpt_every=args.ckpt_every)
    print(json.dumps(r) if args.json else f"wrote the judge to {args.out} ({r['clips']} clips, {r['steps']} steps, "
          f"{r['train_seconds']:.0f} s)" + (f"; held-out R@1 {r['heldout']['r_at_1']:.2f}, R@5 {r['heldout']['r_at_5']:.2f}"
                                              if r.get("heldout", {}).get("r_at_1") is not None else ""))
    return 0


def cmd_judge_extend(args) -> int:
    from halm.judge_extend import extend_judge

    r = extend_judge(args.data, args.out, base=args.judge, steps=args.steps, seed=args.seed, heldout=args.heldout,
                     progress=not args.json)
    if args.json:
        print(json.dumps(r))
    else:
        held = r.get("heldout", {}).get("attribute_accuracy", {})
        print(f"wrote the judge to {args.out}: its base's weights (sha256 {r['base_sha256'][:16]}) and "
              f"{len(r['heads'])} new heads (probes sha256 {r['probes_sha256'][:16]})")
        for k, h in r["heads"].items():
            print(f"  {k:>10}: {h['classes']} classes, {h['clips']} clips, train {100 * h['train_accuracy']:.1f}%"
                  + (f", held-out {100 * held[k]:.1f}%" if k in held else ""))
    return 0


def cmd_judge_eval(args) -> int:
    from halm.judge import evaluate_judge, load_judge

    r = evaluate_judge(load_judge(args.judge), args.data, progress=not args.json, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['clips']} clips" + (f": text->audio R@1 {r['r_at_1']:.3f}, R@5 {r['r_at_5']:.3f} over the "
                                       f"{r['described_clips']} described clips (chance R@1 {r['chance_r_at_1']:.3f})"
                                       if r["r_at_1"] is not None else " (none described: no retrieval score)"))
        for k, v in r["attribute_accuracy"].items():
            print(f"  {k:>18}: {100 * v:.1f}%")
    return 0


def cmd_eval_t2a(args) -> int:
    from halm.eval_t2a import eval_t2a

    out = args.out or str(Path(args.run) / "eval_t2a")
    r = eval_t2a(args.run, args.captions, out, n=args.n, cfg_coef=args.cfg, seed=args.seed, seconds=args.seconds,
                 judge_dir=args.judge, progress=not args.json, fad_model=args.fad_model, kl_model=args.kl_model,
                 clap_model=args.clap_model, codec_ceiling=not args.no_codec_ceiling, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(", ".join(f"{k.upper()} by {v}" for k, v in r["models"].items()))
        print(f"FAD {r['fad']:.4f} ± {r['fad_std']:.4f}, KL {r['kl']:.3f}, CLAP {r['clap']:.3f} (reference "
              f"{r['reference']['clap']:.3f}); controllability: " + ", ".join(
                  f"{k} {100 * v:.0f}% (ref {100 * r['reference']['controllability'][k]:.0f}%)"
                  for k, v in r["controllability"].items()) + f"\nreport: {out}/report.md")
    return 0


def cmd_listen(args) -> int:
    from halm.listen import Listener, ListenError, serve, summarize

    if args.summary:
        if args.dir or args.a or args.b:
            raise ListenError("--summary reads votes only; leave out --dir / --a / --b")
        if not (Path(args.summary) / "votes.jsonl").exists():
            raise ListenError(f"{args.summary}: no votes.jsonl (run the A/B test with --out {args.summary} first)")
        r = summarize(args.summary)
        if args.json:
            print(json.dumps(r))
        else:
            ci = f"95% CI {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%" if r["ci95"] else "no decided votes"
            share = f"{100 * r['share_b']:.1f}%" if r["share_b"] is not None else "—"
            print(f"{r['n']} votes from {r['raters']} raters: A {r['a']}, B {r['b']}, same {r['same']}; "
                  f"B preferred in {share} of decided votes ({ci})")
            for pair, t in r["per_pair"].items():
                print(f"  {pair}: A {t['a']}, B {t['b']}, same {t['same']}" + (f"  ({t['caption']})" if t["caption"] else ""))
        return 0
    if args.a or args.b or args.out:
        if not (args.a and args.b and args.out) or args.dir:
            raise ListenError("the A/B test needs --a DIR_A --b DIR_B --out OUT (and no --dir)")
        listener = Listener([args.a, args.b], ab_out=args.out, seed=args.seed)
        what = f"A/B test of {len(listener.pairs)} pairs, votes to {args.out}/votes.jsonl"
    else:
        listener = Listener(args.dir or [])
        what = f"{sum(len(c) for c in listener.clips)} clips of {len(listener.dirs)} folder(s)"
    server = serve(listener, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"halm listen: {what} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    s = sub.add_parser("eval-t2a", help="generate for a manifest's captions and score FAD / KL / CLAP / controllability",
                       description="Generate one clip per caption of MANIFEST with a t2a run (batched, seeded) and score "
                       "it against the manifest's reference audio in the judge's space (halm/eval_t2a.py).")
    s.add_argument("--run", required=True, help="a t2a run folder")
    s.add_argument("--captions", required=True, help="captioned source with reference audio (synth corpus or JSONL manifest)")
    from halm.eval_t2a import eval_t2a

    d = defaults(eval_t2a)
    s.add_argument("--n", type=int, default=d["n"], help=f"captions to use, the first N by id (default {d['n']})")
    s.add_argument("--cfg", type=float, default=d["cfg_coef"],
                   help=f"classifier-free guidance coefficient (default {d['cfg_coef']})")
    s.add_argument("--seed", type=int, default=d["seed"], help=f"sampling seed; same seed, same scores (default {d['seed']})")
    s.add_argument("--seconds", type=float, help="seconds per generated clip (default: the judge's window, 6 s)")
    s.add_argument("--judge", help="judge directory (default: the shipped halm judge)")
    s.add_argument("--no-codec-ceiling", action="store_true", help="skip scoring the references encoded and decoded by "
                   "the run's codec (the ceiling generated audio can reach; on by default)")
    s.add_argument("--fad-model", default="judge", metavar="SPEC",
                   help="embeddings for FAD: judge (default), vggish:FILE (torchvggish's vggish-10086976.pth), "
                   "clap:DIR (Hugging Face CLAP folder) or laion-clap:FILE (needs the laion_clap package)")
    s.add_argument("--kl-model", default="judge", metavar="SPEC",
                   help="label posteriors for KL: judge (default: its attribute heads) or ast:DIR (Hugging Face AST "
                   "AudioSet classifier folder, 527 sigmoid labels)")
    s.add_argument("--clap-model", default="judge", metavar="SPEC",
                   help="joint text-audio space for the CLAP score: judge (default), clap:DIR or laion-clap:FILE")
    s.add_argument("--out", help="report folder (default RUN/eval_t2a): report.md, results.json, samples/, spectrograms.png")
    add_json(s)
    add_device(s)
    s.set_defaults(func=cmd_eval_t2a)

    s = sub.add_parser("judge", help="train or evaluate the text-audio judge (embeddings for FAD/CLAP, attribute classifiers)",
                       description="halm's offline judge of generated audio: a CLAP-style audio encoder over log-mel "
                       "with the frozen MiniLM text tower, plus one classifier per caption attribute (halm/judge.py).")
    judge_sub = s.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    c = judge_sub.add_parser("train", help="train a judge on captioned corpora (halm synth music / sfx)",
                             description="Contrastive (InfoNCE) audio-caption training plus attribute heads; writes "
                             "DIR/config.json and DIR/model.safetensors (the judge), DIR/metrics.jsonl and DIR/tb/ (the "
                             "training log), DIR/train_state/ (rerun the same command to resume).")
    c.add_argument("--data", nargs="+", required=True, help="captioned sources (synth corpora or manifests)")
    c.add_argument("--out", required=True, help="judge directory to write")
    c.add_argument("--heldout", nargs="*", help="sources to report retrieval and attribute accuracy on")
    from halm.judge import train_judge

    judge_defaults = defaults(train_judge)
    c.add_argument("--steps", type=int, default=judge_defaults["steps"],
                   help=f"optimisation steps (default {judge_defaults['steps']})")
    c.add_argument("--batch-size", type=int, default=judge_defaults["batch_size"],
                   help=f"clips per step (default {judge_defaults['batch_size']})")
    c.add_argument("--seed", type=int, default=judge_defaults["seed"], help=f"random seed (default {judge_defaults['seed']})")
    c.add_argument("--ckpt-every", type=int, default=judge_defaults["ckpt_every"],
                   help=f"steps between checkpoints in DIR/train_state (default {judge_defaults['ckpt_every']})")
    add_json(c)
    add_device(c)
    c.set_defaults(func=cmd_judge_train)
    c = judge_sub.add_parser("extend", help="add heads for new attributes (e.g. speech: accent, timbre, rate, pitch) "
                             "to a judge, on its frozen embedding",
                             description="Fit one linear head per attribute of DATA that the judge lacks on the "
                             "judge's frozen audio embedding (full batch, seeded). Every other weight is kept: the "
                             "extended judge scores FAD / CLAP / its old heads exactly as the base does and keeps its "
                             "weight hash; the new heads go to DIR/probes.safetensors.")
    c.add_argument("--data", nargs="+", required=True, help="sources whose clips carry the new attributes")
    c.add_argument("--out", required=True, help="judge directory to write (not the base's)")
    c.add_argument("--judge", help="the base judge directory (default: the one shipped with halm)")
    c.add_argument("--heldout", nargs="*", help="sources to report the new heads' accuracy on")
    from halm.judge_extend import extend_judge

    ext = defaults(extend_judge)
    c.add_argument("--steps", type=int, default=ext["steps"], help=f"full-batch optimisation steps per head "
                   f"(default {ext['steps']})")
    c.add_argument("--seed", type=int, default=ext["seed"], help=f"initialisation seed (default {ext['seed']})")
    add_json(c)
    c.set_defaults(func=cmd_judge_extend)
    c = judge_sub.add_parser("eval", help="held-out quality of a judge: text->audio R@1/R@5, attribute accuracy",
                             description="Embed the captioned clips of DATA and their captions with the judge; report "
                             "text->audio retrieval (R@1, R@5, chance) and each attribute head's accuracy.")
    c.add_argument("--judge", help="judge directory (default: the one shipped with halm)")
    c.add_argument("--data", nargs="+", required=True, help="captioned sources")
    add_json(c)
    add_device(c)
    c.set_defaults(func=cmd_judge_eval)

    s = sub.add_parser("listen", help="a local page to listen through generated audio, or a blind A/B test",
                       description="Gallery: every WAV of --dir folders side by side, with captions, spectrograms "
                       "and the judge's reading (eval-t2a folders). A/B: the WAVs that --a and --b share by name, one "
                       "pair at a time, sides in seeded random order, votes appended to OUT/votes.jsonl; --summary "
                       "OUT tallies them (halm/listen.py). Plain HTML: works without JavaScript.")
    s.add_argument("--dir", action="append", help="a folder of WAVs to show (repeat for side-by-side columns)")
    s.add_argument("--a", help="A/B test: folder A (e.g. eval-t2a --out of the baseline)")
    s.add_argument("--b", help="A/B test: folder B (the same captions from the other model)")
    s.add_argument("--out", help="A/B test: folder for votes.jsonl")
    s.add_argument("--summary", metavar="OUT", help="tally the votes in OUT/votes.jsonl and exit")
    s.add_argument("--seed", type=int, default=0, help="A/B test: seed of the pair order and sides (default 0)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    s.add_argument("--json", action="store_true", help="--summary: print one JSON object and nothing else")
    s.set_defaults(func=cmd_listen)
