"""Export's output shows what the user can act on, not the frameworks' talk about themselves.

TensorFlow 2.16+ writes its import-time notices (oneDNN, absl's "before InitializeLog") from
C++ straight to file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` can take effect; the TFLite
converter prints its calibration settings and LiteRT its XNNPACK delegate the same way, and
onnxruntime's quantizer advises (through the root logger) a pre-processing step the exporter
has no use for. None of it is anything an edge-lstm user can act on, and it buried the
parity table.

`framework_chatter_filtered()` (a context manager and a decorator) points descriptor 2 at a
temporary file while the frameworks run and Python's own `sys.stderr` at a copy of the real
one, so progress bars and Python warnings stay live. At the end every captured line that is
not known chatter is written out: a real warning or error still shows. `TF_CPP_MIN_LOG_LEVEL=0`
in the environment turns the filter off (the user asked to see everything).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: Whole lines that are chatter (matched after stripping), and nothing else.
CHATTER = re.compile(
    "|".join((
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*",  # glog-style INFO lines of TensorFlow's C++
        r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.",
        r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
        r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+",
    ))
)

#: onnxruntime.quantization's advice to run its pre-processing (the exporter builds the graph
#: it quantizes; there is nothing for the user to pre-process).
_ORT_ADVICE = ("Please consider to run pre-processing before quantization",
               "Please consider pre-processing before quantization")


class _OrtAdviceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ORT_ADVICE)


_ORT_FILTER = _OrtAdviceFilter()
_depth = 0


def kept_lines(text: str) -> list[str]:
    """The lines of captured output that are not chatter (blank lines dropped)."""
    return [line for line in text.splitlines() if line.strip() and not CHATTER.fullmatch(line.strip())]


def _python_stderr_is_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False  # replaced (click's test runner, a notebook): it does not write to fd 2


@contextlib.contextmanager
def framework_chatter_filtered() -> Iterator[None]:
    """Run the body with TensorFlow's, LiteRT's and onnxruntime's chatter dropped (see module doc)."""
    global _depth
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads; the user's setting wins
    if _depth or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        yield
        return
    _depth += 1
    root = logging.getLogger()
    root.addFilter(_ORT_FILTER)
    python_stderr = sys.stderr
    swap = _python_stderr_is_fd2()
    with contextlib.suppress(AttributeError, ValueError, OSError):
        python_stderr.flush()
    saved = os.dup(2)
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    if swap:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding,
                               errors=python_stderr.errors)
    try:
        yield
    finally:
        if swap:
            live, sys.stderr = sys.stderr, python_stderr
            live.close()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        kept = kept_lines(capture.read().decode("utf-8", "replace"))
        capture.close()
        root.removeFilter(_ORT_FILTER)
        _depth -= 1
        if kept:
            print("\n".join(kept), file=sys.stderr, flush=True)
