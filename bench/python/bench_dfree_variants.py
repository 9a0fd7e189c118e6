"""Data-free step variants for all-MiniLM-L6-v2 against NNCodec qp -38 DQ (issue 15, "<= 0.80x").

    /work/venvs/nnc/bin/python bench/python/bench_dfree_variants.py --nncodec-only --nncodec-cache nnc.json
    python bench/python/bench_dfree_variants.py --nncodec-cache nnc.json [--only default,syncols]

Each variant is a ``CodecConfig`` (rule 4 at some ``rel_step``, plus a per-tensor plan of channel
step scales, or model-level step factors) encoded through the real encode path
(``nnpress.encode.encode_tensor``, the tensors of identical plans encoded once and reused) and
written by the real writer (``write_records``): the byte counts are those ``compress`` writes for
that config (the default row matches ``bench_default.py``'s to a byte of metadata). Fidelity: mean
and min cosine between the sentence embeddings of the original and of the decoded weights.

Sets (as in ``bench_default.py``): **tune** = the 178 sentences of ``minilm.CALIBRATION_EXTRA``
(every choice is judged there: "tune ok" = mean and min at least NNCodec's on it); **report** = the
52 ``minilm.SENTENCES`` and the 110 sentences of ``bench/data/minilm_test_sentences.txt``, which no
choice looked at. No variant sees a sentence: the statistics are from the weights alone or from
random token ids (``nnpress.synthetic.synthetic_batches``), except the rows marked "upper bound",
which use tune-set activations and are not data-free.

Variants (the ``--only`` keys):
- ``default``: ``CodecConfig()`` and its ``rel_step`` family;
- ``rows``: word-embedding row scales from each row's spread after the position and token-type
  embeddings are added (what the embedding LayerNorm divides by), strength alpha;
- ``embcols``: embedding columns scaled by 1/|gamma| of the embedding LayerNorm;
- ``lncols``: columns of every Linear fed by a LayerNorm scaled by (gamma^2 + beta^2)^(-alpha/2);
- ``lnrows``: rows of the Linear layers whose output goes into a residual LayerNorm scaled by
  1/|gamma|;
- ``syncols``: columns of every Linear scaled by E[x_j^2]^(-alpha/2), x its input on random token ids;
- ``biascorr``: Linear biases corrected by -(W_hat - W) E[x] (E[x] from random token ids; and,
  as an upper bound, from the tune sentences);
- ``alloc``: the word embedding's step and the Linear steps moved against each other;
- ``vocab``: word-embedding row steps from a token-frequency prior read off the tokenizer's vocabulary
  order (BERT's WordPiece list is in frequency order after its reserved ids and single characters):
  step ~ rank^(alpha/2) (the high-rate optimum for Zipf frequencies at alpha 1), never-emitted
  ``[unused*]`` and ``[PAD]`` rows at the coarsest rank, special tokens at rank 1, single characters at
  rank 100;
- ``lam``: the trellis' rate term (``lam_scale``);
- ``noise``: the default with rel_step moved by 0.5-1 % (how much the min moves by itself);
- ``decomp``: per-sentence error of the default with only the word embedding, or only the Linear
  weights, decoded (the rest fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TEST_SENTENCES = HERE.parent / "data" / "minilm_test_sentences.txt"
WORD = "embeddings.word_embeddings.weight"
EMBEDDINGS = (WORD, "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load():
    import minilm

    model, _ = minilm.load_minilm()
    model.eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    test = [t.strip() for t in TEST_SENTENCES.read_text(encoding="utf-8").splitlines() if t.strip()]
    sets = {"tune": minilm.CALIBRATION_EXTRA, "report": minilm.SENTENCES, "test": test}
    ref = {k: minilm.embed(model, s) for k, s in sets.items()}
    return model, sd, sets, ref


def score(state, sets, ref):
    import minilm

    out = {}
    for k, s in sets.items():
        mean, mn = minilm.cosine_fidelity(ref[k], minilm.embed(state, s))
        out[k] = (mean, mn)
    return out


def nncodec_row(path):
    """NNCodec qp -38, dependent quantization, lambda 0 (its defaults), into the JSON cache."""
    import peers

    _, sd, sets, ref = load()
    c0, w0 = time.process_time(), time.perf_counter()
    data, info = peers.nncodec_compress_state_dict(sd, qp=-38, opt_qp=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rec = peers.nncodec_decompress(data, shapes=info["shapes"])
    state = {k: rec.get(k, v.numpy()) for k, v in sd.items()}
    row = {"bytes": len(data), "encode_s": wall, "encode_cpu_s": cpu, "load": os.getloadavg()[0]}
    row.update({k: list(v) for k, v in score(state, sets, ref).items()})
    Path(path).write_text(json.dumps(row, indent=1))
    log(row)


class Runner:
    def __init__(self, sd, sets, ref, nnc):
        from nnpress.traverse import collect

        self.sd, self.sets, self.ref, self.nnc = sd, sets, ref, nnc
        self.entries = collect(sd)
        self.orig = {
            e.name: np.asarray(e.float_values() if e.is_float else e.values).reshape(e.shape) for e in self.entries
        }
        self.cache = {}
        self.rows = []

    def encode(self, config, factors=None):
        from nnpress.encode import ModelStats, _plan, encode_tensor, file_metadata, model_stats, write_records

        stats = model_stats(self.entries, config)
        if factors:
            stats = ModelStats(stats.mean_size, stats.total_size, factors)
        encs = []
        for e in self.entries:
            p = _plan(e, e.float_values() if e.is_float else None, config, stats)
            key = (e.name, p.lossless, p.method, p.step, p.lam, p.row_scale_exp, p.col_scale_exp)
            if key not in self.cache:
                self.cache[key] = encode_tensor(e, config, stats)
            encs.append(self.cache[key])
        nbytes = len(write_records(encs, config, file_metadata(config)))
        state = {
            e.name: x.recon.reshape(e.shape) if x.recon is not None else self.orig[e.name]
            for e, x in zip(self.entries, encs)
        }
        return state, nbytes

    def row(self, label, config=None, *, factors=None, state=None, nbytes=None):
        if state is None:
            state, nbytes = self.encode(config, factors)
        sc = score(state, self.sets, self.ref)
        t = self.nnc["tune"]
        ok = sc["tune"][0] >= t[0] and sc["tune"][1] >= t[1]
        r = {"label": label, "bytes": nbytes, "ratio": nbytes / self.nnc["bytes"], "tune_ok": ok, **sc}
        self.rows.append(r)
        log(f"  {label}: {nbytes:,} {r['ratio']:.4f}x " + " ".join(f"{k} {v[0]:.5f}/{v[1]:.5f}" for k, v in sc.items()))
        return r, state


def exps(log2_scale, alpha):
    """int8 channel exponents (scale 2**(e/8)) for step scales 2**(alpha * l), l centred on its mean."""
    x = np.asarray(log2_scale, np.float64)
    x = x - x.mean()
    return tuple(int(v) for v in np.clip(np.round(8 * alpha * x), -128, 127))


def combined_row_spread(sd):
    """Each word-embedding row's spread after adding the position (1..) and token-type-0 rows: the
    quantity the embedding LayerNorm divides by (root of the mean over positions of 1/variance)."""
    w = sd[WORD].numpy().astype(np.float64)
    q = sd["embeddings.position_embeddings.weight"].numpy().astype(np.float64)[1:]
    q = q + sd["embeddings.token_type_embeddings.weight"].numpy().astype(np.float64)[0]
    wc, qc = w - w.mean(1, keepdims=True), q - q.mean(1, keepdims=True)
    var = (wc**2).mean(1)[:, None] + (qc**2).mean(1)[None, :] + 2 * (wc @ qc.T) / w.shape[1]
    return 1.0 / np.sqrt((1.0 / var).mean(1))


def vocab_ranks(vocab):
    """A frequency rank per token id from a BERT WordPiece vocabulary's order (see ``vocab``)."""
    rank = np.ones(len(vocab))
    for i, t in enumerate(vocab):
        if t.startswith("[unused") or t == "[PAD]":
            rank[i] = 1e7
        elif t.startswith("[") and t.endswith("]"):
            rank[i] = 1
        elif len(t) == 1:
            rank[i] = 100
        else:
            rank[i] = max(1, i - 1995)
    return rank


def layer_norm_inputs(sd):
    """Linear weight -> the LayerNorm (gamma, beta) that feeds it (BERT naming)."""
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    src = {}
    for i in layers:
        prev = "embeddings.LayerNorm" if i == 0 else f"encoder.layer.{i - 1}.output.LayerNorm"
        for m in ("query", "key", "value"):
            src[f"encoder.layer.{i}.attention.self.{m}.weight"] = prev
        src[f"encoder.layer.{i}.intermediate.dense.weight"] = f"encoder.layer.{i}.attention.output.LayerNorm"
    src["pooler.dense.weight"] = f"encoder.layer.{layers[-1]}.output.LayerNorm"
    return {
        k: (sd[v + ".weight"].numpy().astype(np.float64), sd[v + ".bias"].numpy().astype(np.float64))
        for k, v in src.items()
    }


def input_moments(model, names, batches):
    """Mean and mean square of each Linear's input features over ``batches`` (forward hooks)."""
    import torch

    acc = {}

    def hook(name):
        def f(mod, inp, out):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            a = acc.setdefault(name, [0, 0.0, 0.0])
            a[0] += x.shape[0]
            a[1] = a[1] + x.sum(0)
            a[2] = a[2] + (x * x).sum(0)

        return f

    hooks = [model.get_submodule(n[: -len(".weight")]).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for b in batches:
                model(**b) if isinstance(b, dict) else model(b)
    finally:
        for h in hooks:
            h.remove()
    return {n: ((a[1] / a[0]).numpy(), (a[2] / a[0]).numpy()) for n, a in acc.items()}


def bias_corrected(state, orig, names, means):
    out = dict(state)
    for n in names:
        b = n[: -len("weight")] + "bias"
        delta = (state[n].astype(np.float64) - orig[n]) @ means[n]
        out[b] = (state[b] - delta).astype(np.float32)
    return out


def decomposition(run, config, sets):
    """1 - cosine per sentence with all, only the word embedding, or only the Linear weights
    decoded (tables to stdout)."""
    import minilm

    state, _ = run.encode(config)
    groups = {
        "all": lambda n: True,
        "word embedding only": lambda n: n == WORD,
        "Linear only": lambda n: not n.startswith("embeddings."),
    }
    print("\n| decoded | set | mean 1 - cos | worst 1 - cos (sentence) |\n|---|---|---|---|")
    for k in ("tune", "report"):
        for label, keep in groups.items():
            st = {n: state[n] if keep(n) else run.orig[n] for n in state}
            emb, ref = minilm.embed(st, sets[k]), run.ref[k]
            cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
            err = 1 - cos
            i = int(err.argmax())
            print(f"| {label} | {k} | {err.mean():.2e} | {err[i]:.2e} (#{i} {sets[k][i][:40]!r}) |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nncodec-cache", default="/tmp/nnpress_dfree_variants_nncodec.json")
    ap.add_argument("--nncodec-only", action="store_true")
    ap.add_argument(
        "--only", default="default,rows,embcols,lncols,lnrows,syncols,biascorr,alloc,vocab,lam,noise,decomp"
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.nncodec_only:
        nncodec_row(args.nncodec_cache)
        return
    from nnpress.config import CodecConfig, TensorPlan
    from nnpress.synthetic import synthetic_batches

    nnc = json.loads(Path(args.nncodec_cache).read_text())
    print(f"load {os.getloadavg()[0]:.1f}; NNCodec qp -38 DQ: {nnc}")
    model, sd, sets, ref = load()
    run = Runner(sd, sets, ref, nnc)
    only = set(args.only.split(","))
    lin = [n for n in sd if n.endswith(".weight") and sd[n].ndim == 2 and not n.startswith("embeddings.")]
    g = {k: v.numpy().astype(np.float64) for k, v in sd.items()}

    if "default" in only:
        c0 = time.process_time()
        run.row("default CodecConfig() (rel_step 1/22)", CodecConfig())
        log(f"  (default encode + score CPU {time.process_time() - c0:.1f} s)")
        for d in (21, 20, 19):
            run.row(f"default family, rel_step 1/{d}", CodecConfig(rel_step=1 / d))
    if "rows" in only:
        s = np.log2(combined_row_spread(sd))
        for a in (1.0, 0.5):
            run.row(
                f"word rows by combined spread, alpha {a}",
                CodecConfig(plan={WORD: TensorPlan(row_scale_exp=exps(s, a))}),
            )
    if "embcols" in only:
        lg = -np.log2(np.abs(g["embeddings.LayerNorm.weight"]))
        for a in (1.0, 0.5):
            plan = {n: TensorPlan(col_scale_exp=exps(lg, a)) for n in EMBEDDINGS}
            run.row(f"embedding columns by 1/|LN gamma|, alpha {a}", CodecConfig(plan=plan))
    if "lncols" in only:
        lni = layer_norm_inputs(sd)
        for a, d in ((0.5, 22), (1.0, 22), (0.5, 20), (0.5, 19)):
            plan = {n: TensorPlan(col_scale_exp=exps(-0.5 * np.log2(gm**2 + bt**2), a)) for n, (gm, bt) in lni.items()}
            run.row(
                f"LN-fed Linear columns by (g^2+b^2)^-1/2, alpha {a}, 1/{d}", CodecConfig(rel_step=1 / d, plan=plan)
            )
    if "lnrows" in only:
        plan = {}
        for i in range(6):
            for m, ln in (
                ("attention.output.dense", "attention.output.LayerNorm"),
                ("output.dense", "output.LayerNorm"),
            ):
                plan[f"encoder.layer.{i}.{m}.weight"] = TensorPlan(
                    row_scale_exp=exps(-np.log2(np.abs(g[f"encoder.layer.{i}.{ln}.weight"])), 1.0)
                )
        run.row("rows of Linear feeding a LN by 1/|gamma|, alpha 1", CodecConfig(plan=plan))
    if "syncols" in only or "biascorr" in only:
        for nb in (2, 8):
            c0, w0 = time.process_time(), time.perf_counter()
            mom = input_moments(model, lin, synthetic_batches(model, nb, 16))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            log(f"  synthetic input moments, {nb} x 16 x 32 random ids: {cpu:.1f} s CPU, {wall:.1f} s wall")
            if nb == 2:
                mom2 = mom
        if "syncols" in only:

            def syn_plan(m, a):
                return {n: TensorPlan(col_scale_exp=exps(-0.5 * np.log2(np.maximum(m[n][1], 1e-12)), a)) for n in lin}

            run.row("synthetic columns (2 batches), alpha 0.5, 1/22", CodecConfig(plan=syn_plan(mom2, 0.5)))
            for a, d in ((0.5, 22), (0.5, 21), (0.5, 20), (0.5, 19), (0.5, 18), (1.0, 22), (1.0, 20)):
                run.row(
                    f"synthetic columns (8 batches), alpha {a}, 1/{d}",
                    CodecConfig(rel_step=1 / d, plan=syn_plan(mom, a)),
                )
        if "biascorr" in only:
            state, nbytes = run.encode(CodecConfig())
            run.row(
                "default + bias correction, synthetic E[x]",
                state=bias_corrected(state, run.orig, lin, {n: m[0] for n, m in mom.items()}),
                nbytes=nbytes,
            )
            import minilm

            acc = {}
            hooks = []
            for n in lin:

                def f(mod, inp, out, n=n):
                    x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
                    a = acc.setdefault(n, [0, 0.0])
                    a[0] += x.shape[0]
                    a[1] = a[1] + x.sum(0)

                hooks.append(model.get_submodule(n[: -len(".weight")]).register_forward_hook(f))
            minilm.embed(model, sets["tune"])
            for h in hooks:
                h.remove()
            real = {n: (a[1] / a[0]).numpy() for n, a in acc.items()}
            run.row(
                "default + bias correction, tune-set E[x] (upper bound, not data-free)",
                state=bias_corrected(state, run.orig, lin, real),
                nbytes=nbytes,
            )
    if "alloc" in only:
        for fw, fl in ((0.7, 1.13), (0.85, 1.06), (1.25, 0.92)):
            run.row(
                f"word embedding step x{fw}, Linear steps x{fl}",
                CodecConfig(),
                factors={WORD: fw, **dict.fromkeys(lin, fl)},
            )
    if "vocab" in only:
        import minilm

        vocab = (Path(minilm.model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
        lr = 0.5 * np.log2(vocab_ranks(vocab))
        for a, d in ((0.5, 22), (1.0, 22), (0.5, 19), (0.5, 17), (1.0, 19), (1.0, 17)):
            plan = {WORD: TensorPlan(row_scale_exp=exps(lr, a))}
            run.row(f"word rows by vocabulary rank, alpha {a}, 1/{d}", CodecConfig(rel_step=1 / d, plan=plan))
    if "lam" in only:
        for lam in (0.12, 0.24):
            for d in (22, 24):
                run.row(f"lam_scale {lam}, 1/{d}", CodecConfig(rel_step=1 / d, lam_scale=lam))
    if "noise" in only:
        for d in (21.8, 21.9, 22.1, 22.2):
            run.row(f"default, rel_step 1/{d}", CodecConfig(rel_step=1 / d))
    if "decomp" in only:
        decomposition(run, CodecConfig(), sets)

    t = nnc
    print("\n| variant | bytes | vs NNCodec | tune mean / min | 52 report | 110 test | tune ok |")
    print("|---|---|---|---|---|---|---|")
    cells = " | ".join(f"{t[k][0]:.5f} / {t[k][1]:.5f}" for k in ("tune", "report", "test"))
    print(f"| NNCodec qp −38 DQ | {t['bytes']:,} | 1.000× | {cells} | |")
    for r in run.rows:
        cells = " | ".join(f"{r[k][0]:.5f} / {r[k][1]:.5f}" for k in ("tune", "report", "test"))
        print(f"| {r['label']} | {r['bytes']:,} | {r['ratio']:.3f}× | {cells} | {'yes' if r['tune_ok'] else 'no'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(run.rows, indent=1))


if __name__ == "__main__":
    main()
