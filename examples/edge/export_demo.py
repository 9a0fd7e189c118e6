"""Export what examples/edge needs: the demo CNN's .nnp, the digits test images as raw files, and the
Python model's predictions to compare with.

Usage: python examples/edge/export_demo.py OUT_DIR [--seed 0] [--rel-step R] [--onnx]

Writes into OUT_DIR (using the *installed* nnpress):
  digits_cnn.nnp      the trained digits CNN (python/nnpress/demo_models.py), nnpress.compress defaults
                      (--rel-step R: CodecConfig(rel_step=R), coarser steps = fewer distinct values)
  test_images.f32     N x 64 float32 pixels in [0, 1] (the fixed 25 % test split), little endian
  test_labels.i32     N int32 labels
  expected_pred.i32   N int32 predictions of the Python model that the edge app must reproduce:
                      nnpress.decompress(digits_cnn.nnp) loaded into DigitsCNN, run by torch (dense)
  digits_cnn.onnx     (--onnx) that same decompressed model exported with torch.onnx.export
  export.json         accuracies (float model, decompressed model), N, file sizes
Prints export.json's content.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rel-step", type=float, default=None, help="CodecConfig.rel_step (default: the config's)")
    ap.add_argument("--onnx", action="store_true", help="also export the decompressed model to ONNX")
    args = ap.parse_args(argv)

    import torch

    import nnpress
    from nnpress.demo_models import build_digits_model, evaluate_accuracy, load_digits_data, train_digits_model

    os.makedirs(args.out_dir, exist_ok=True)
    data = load_digits_data()
    model = train_digits_model("cnn", seed=args.seed, data=data)
    nnp = os.path.join(args.out_dir, "digits_cnn.nnp")
    config = nnpress.CodecConfig() if args.rel_step is None else nnpress.CodecConfig(rel_step=args.rel_step)
    nnpress.compress(model, nnp, config)

    restored = build_digits_model("cnn")
    restored.load_state_dict(nnpress.decompress(nnp))
    restored.eval()
    x = torch.from_numpy(data.x_test)
    with torch.no_grad():
        logits = restored(x)
    pred = logits.argmax(dim=1).numpy().astype("<i4")

    def write(name: str, arr: np.ndarray) -> None:
        path = os.path.join(args.out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(np.ascontiguousarray(arr).tobytes())
        os.replace(tmp, path)

    write("test_images.f32", data.x_test.reshape(len(data.x_test), 64).astype("<f4"))
    write("test_labels.i32", data.y_test.astype("<i4"))
    write("expected_pred.i32", pred)

    # How close the nearest decision is (top-1 minus top-2 logit): a tie within float summation
    # noise could flip between implementations; report it so a mismatch can be diagnosed.
    top2 = torch.topk(logits, 2, dim=1).values
    info = {
        "images": len(pred),
        "accuracy_float_model": evaluate_accuracy(model, data.x_test, data.y_test),
        "accuracy_python": float((pred == data.y_test).mean()),
        "correct_python": int((pred == data.y_test).sum()),
        "min_logit_margin": float((top2[:, 0] - top2[:, 1]).min()),
        "nnp_bytes": os.path.getsize(nnp),
        "rel_step": config.rel_step,
        "nnpress_version": getattr(nnpress, "__version__", "?"),
    }
    if args.onnx:
        onnx_path = os.path.join(args.out_dir, "digits_cnn.onnx")
        torch.onnx.export(
            restored,
            (x[:1],),
            onnx_path,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            dynamo=False,
        )
        info["onnx_bytes"] = os.path.getsize(onnx_path)
    with open(os.path.join(args.out_dir, "export.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
