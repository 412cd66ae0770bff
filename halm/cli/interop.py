"""`halm` commands: checkpoints in and out of transformers' formats: `import musicgen`, `export`."""

from __future__ import annotations

import json

from halm.cli.common import add_json


def cmd_import(args) -> int:
    from halm.interop import import_musicgen

    r = import_musicgen(args.src, args.out, tokenizer=args.tokenizer)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['run']}: MusicGen as a halm t2a run ({r['params'] / 1e6:.1f}M decoder params, {r['codebooks']} "
              f"codebooks of {r['codebook_size']}, codec {r['sample_rate']} Hz / {r['frame_rate']:g} frames/s). "
              f"Next: halm generate --run {r['run']} --text '…'; fine-tune: halm prepare … --codec {r['run']}/codec, "
              f"then halm train --init-from {r['run']} --data … --out …")
    return 0


def cmd_export(args) -> int:
    from halm.interop import export_run

    r = export_run(args.run, args.out, args.format, weights=args.weights)
    print(json.dumps(r) if args.json else f"{r['out']}: {r['class']} (load it with "
          f"transformers.{r['class']}.from_pretrained({r['out']!r}))")
    return 0


def register(sub) -> None:
    s = sub.add_parser("import", help="turn a transformers checkpoint into a halm run (MusicGen)",
                       description="Convert a local MusicgenForConditionalGeneration folder (save_pretrained layout, "
                       "e.g. facebook/musicgen-small saved once elsewhere) into a halm t2a run: the decoder's weights, "
                       "its T5 text encoder and tokenizer (RUN/text_encoder) and its EnCodec (RUN/codec). Nothing is "
                       "downloaded. The run then works with generate, eval, eval-t2a and train --init-from.")
    s.add_argument("kind", choices=["musicgen"], help="what the folder holds (musicgen)")
    s.add_argument("src", help="the folder: config.json + model.safetensors (+ the processor's tokenizer files)")
    s.add_argument("--out", required=True, help="the new run folder (must not exist or be empty)")
    s.add_argument("--tokenizer", help="folder with the T5 tokenizer files, if not next to the model")
    add_json(s)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="write a run in transformers' format (gpt -> GPT-2, MusicGen-shaped t2a -> MusicGen)",
                       description="Write RUN as a folder transformers loads with from_pretrained: a gpt run as "
                       "GPT2LMHeadModel; a t2a run with MusicGen's architecture (an imported MusicGen, fine-tuned "
                       "or not) as MusicgenForConditionalGeneration with its T5 encoder, tokenizer and EnCodec. Other "
                       "models (the hybrids, halm's own t2a presets) get a message saying why they do not fit.")
    s.add_argument("run", help="a run folder")
    s.add_argument("--format", default="transformers", choices=["transformers"], help="target format (transformers)")
    s.add_argument("--out", required=True, help="the output folder (must not exist or be empty)")
    s.add_argument("--weights", default="auto", choices=["auto", "model", "ema"],
                   help="which weights: auto (EMA when the run has them), model or ema (default auto)")
    add_json(s)
    s.set_defaults(func=cmd_export)
