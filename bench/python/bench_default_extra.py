"""Measurements behind the data-free default's choices (issue 15) that ``bench_default.py`` does not make.

    python bench/python/bench_default_extra.py digits-fine
    python bench/python/bench_default_extra.py minilm-configs '{"method": "trellis", "rel_step": 0.05}' ...
    python bench/python/bench_default_extra.py minilm-probe 0.0015 0.002 0.0025

- ``digits-fine``: the digits CNN, MLP and heavy-tailed MLP (``heavy_tail.py``) at ``rel_step`` 1/24
  with steps from the robust spread and from the std (``spread="std"``), each with biases and norms
  stored exactly and quantized near-losslessly (``lossless_roles=("buffer", "other")``, the
  default since issue 15): bytes, top-1 on the 450 test digits,
  mean KL of the predictions from the original's on the test digits and on all 1,797 digits.
- ``minilm-configs``: one ``nnpress.compress`` of all-MiniLM-L6-v2 per JSON object (the
  ``CodecConfig`` fields; lists become tuples); ``{"nncodec": 1, "qp": -38}`` is NNCodec instead
  (needs the NNCodec venv). Fidelity: mean / min cosine of the sentence embeddings over the
  even-numbered sentences of ``minilm.SENTENCES`` ("tune"), the odd-numbered ("held") and all.
- ``minilm-probe``: data-free sensitivities from ``tune.probe_sensitivities`` on 8 random sequences of
  24 word pieces (the model's last hidden state), ``tune.allocate_steps`` (trellis) at each global
  step given, biases and norms near-lossless; same fidelity columns.

One JSON line per result goes to stdout after the human-readable line (``--jsonl FILE`` to collect).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nnpress  # noqa: E402
from nnpress.config import CodecConfig  # noqa: E402


def _emit(jsonl, rec):
    if jsonl:
        with open(jsonl, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")


def digits_fine(jsonl):
    import torch

    import heavy_tail
    from nnpress.demo_models import (
        build_digits_model,
        evaluate_accuracy,
        load_digits_data,
        train_digits_model,
    )

    torch.set_num_threads(1)
    d = load_digits_data()
    x_all = torch.from_numpy(np.concatenate([d.x_train, d.x_test]))
    n_test = len(d.x_test)
    print("| model | configuration | bytes | bits/param | top-1 | KL (450 test) | KL (all 1,797) |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("cnn", "mlp", "heavy"):
        base = "mlp" if kind == "heavy" else kind
        m = train_digits_model(base, seed=0)
        sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
        if kind == "heavy":
            sd, _ = heavy_tail.heavy_tailed_state_dict(sd)

        def logp(state, base=base, sd=sd):
            mm = build_digits_model(base)
            mm.load_state_dict(
                {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(sd[k].shape) for k, v in state.items()}
            )
            mm.eval()
            with torch.no_grad():
                return torch.log_softmax(mm(x_all), -1), evaluate_accuracy(mm, d.x_test, d.y_test)

        ref, _ = logp(sd)
        exact = ("bias", "norm", "buffer", "other")  # biases and norms stored exactly (before issue 15)
        fine = ("buffer", "other")  # biases and norms near-lossless (the default now)
        for label, cfg in (
            ("before issue 15: spread std", CodecConfig(spread="std", rel_step=1 / 24, lossless_roles=exact)),
            ("spread std, fine roles", CodecConfig(spread="std", rel_step=1 / 24, lossless_roles=fine)),
            ("spread robust", CodecConfig(rel_step=1 / 24, lossless_roles=exact)),
            ("spread robust, fine roles", CodecConfig(rel_step=1 / 24, lossless_roles=fine)),
        ):
            with tempfile.TemporaryDirectory() as t:
                p = os.path.join(t, "m.nnp")
                rep = nnpress.compress(sd, p, cfg.replace(threads=1))
                st = nnpress.decompress(p, as_numpy=True)
            lp, top1 = logp(st)
            kl = (ref.exp() * (ref - lp)).sum(-1)
            rec = {
                "model": kind,
                "label": label,
                "bytes": rep.file_bytes,
                "bits_per_param": rep.bits_per_param,
                "top1": top1,
                "kl_test": float(kl[-n_test:].mean()),
                "kl_all": float(kl.mean()),
            }
            print(
                f"| {kind} | {label} | {rec['bytes']:,} | {rec['bits_per_param']:.3f} | {100 * top1:.2f} % | "
                f"{rec['kl_test']:.3e} | {rec['kl_all']:.3e} |",
                flush=True,
            )
            _emit(jsonl, rec)


def _minilm():
    import minilm

    model, tok = minilm.load_minilm()
    model.eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ref = minilm.embed(model, minilm.SENTENCES)

    def fidelity(state):
        e = minilm.embed(state, minilm.SENTENCES)
        return {
            h: minilm.cosine_fidelity(ref[i], e[i])
            for h, i in (("tune", slice(0, None, 2)), ("held", slice(1, None, 2)), ("all", slice(None)))
        }

    return model, tok, sd, fidelity


def _fmt(f):
    return " ".join(f"{h} {a:.5f}/{b:.5f}" for h, (a, b) in f.items())


def _compress(sd, cfg):
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "m.nnp")
        t = time.perf_counter()
        rep = nnpress.compress(sd, p, cfg)
        wall = time.perf_counter() - t
        return rep, wall, nnpress.decompress(p, as_numpy=True)


def minilm_configs(specs, jsonl):
    _, _, sd, fidelity = _minilm()
    n = sum(v.numel() for v in sd.values())
    for text in specs:
        spec = json.loads(text)
        if spec.get("nncodec"):
            import peers

            peers.import_nncodec()
            t = time.perf_counter()
            data, info = peers.nncodec_compress_state_dict(sd, qp=int(spec["qp"]))
            wall = time.perf_counter() - t
            rec_state = peers.nncodec_decompress(data, shapes=info["shapes"])
            state = {k: rec_state.get(k, v.numpy()) for k, v in sd.items()}
            nbytes, bpp = len(data), 8 * len(data) / n
        else:
            cfg = CodecConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
            rep, wall, state = _compress(sd, cfg)
            nbytes, bpp = rep.file_bytes, rep.bits_per_param
        f = fidelity(state)
        print(f"{json.dumps(spec)}: {nbytes:,} bytes, {bpp:.4f} b/p, {_fmt(f)}, {wall:.1f} s", flush=True)
        _emit(jsonl, {"spec": spec, "bytes": nbytes, "bits_per_param": bpp, "fidelity": f, "wall_s": wall})


def minilm_probe(steps, jsonl):
    import torch

    from nnpress import tune

    model, tok, sd, fidelity = _minilm()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, tok.vocab_size, (8, 24), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    t = time.perf_counter()
    sens = tune.probe_sensitivities(
        model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, output_fn=lambda o: o[0], n_probes=2
    )
    probe_s = time.perf_counter() - t
    print(f"probe: {len(sens)} tensors, {probe_s:.1f} s", flush=True)
    weights = {k: v.numpy() for k, v in sd.items() if k in sens}
    for step in steps:
        plan = tune.allocate_steps(weights, step, sens, method="trellis", lam_scale=0.0)
        cfg = CodecConfig(plan=plan, lossless_roles=("buffer", "other"))
        rep, wall, state = _compress(sd, cfg)
        f = fidelity(state)
        print(
            f"step {step}: {rep.file_bytes:,} bytes, {rep.bits_per_param:.4f} b/p, {_fmt(f)}, {wall:.1f} s", flush=True
        )
        _emit(
            jsonl,
            {
                "probe_step": step,
                "probe_s": probe_s,
                "bytes": rep.file_bytes,
                "bits_per_param": rep.bits_per_param,
                "fidelity": f,
                "wall_s": wall,
            },
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("digits-fine", "minilm-configs", "minilm-probe"))
    ap.add_argument("args", nargs="*", help="JSON configs (minilm-configs) or global steps (minilm-probe)")
    ap.add_argument("--jsonl", default=None)
    a = ap.parse_args()
    if a.what == "digits-fine":
        digits_fine(a.jsonl)
    elif a.what == "minilm-configs":
        minilm_configs(a.args, a.jsonl)
    else:
        minilm_probe([float(s) for s in a.args], a.jsonl)


if __name__ == "__main__":
    main()
