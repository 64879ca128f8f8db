"""Convert one ONNX file to float32 TFLite with onnx2tf: run by path, in onnx2tf's own Python.

    PYTHON onnx2tf_main.py MODEL.onnx OUT.tflite

onnx2tf 2.6 needs Python 3.12 and pins its own onnx, onnxruntime and numpy, so it lives in
an interpreter of its own (scripts/onnx2tf_env.py makes one) and this file imports nothing
of rnn_export. onnx2tf rewrites the .onnx it reads, so it converts a copy. Prints
onnx2tf's version on success; exits 1 with onnx2tf's last error line on stderr otherwise.
"""

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="rnn-export-onnx2tf-") as tmp:
        copy = Path(tmp) / "model.onnx"
        shutil.copyfile(source, copy)
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                onnx2tf.convert(
                    input_onnx_file_path=str(copy),
                    output_folder_path=str(Path(tmp) / "out"),
                    non_verbose=True,
                )
        except (Exception, SystemExit) as e:  # onnx2tf exits on some unsupported graphs
            lines = [x for x in log.getvalue().splitlines() if x.strip()]
            print(
                f"onnx2tf failed: {type(e).__name__}: {e}", *lines[-3:], sep="\n", file=sys.stderr
            )
            return 1
        made = Path(tmp) / "out" / "model_float32.tflite"
        if not made.is_file():
            print("onnx2tf wrote no float32 .tflite", file=sys.stderr)
            return 1
        shutil.copyfile(made, target)
    print(onnx2tf.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
