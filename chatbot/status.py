"""`status`: one screen that tells the user where they stand and which command to run next.

Reads only files (manifest, processed outputs, metrics.jsonl, the run lock, artifacts, .env); changes nothing and
loads no model. Room names are shown because this is the user's own terminal; chat text never is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .config import Config
from .errors import ChatbotError
from .formats import processed
from .fsio import relative_path, sha256_file
from .security import MIN_MODEL_KEY_CHARS


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    next_step: str | None = None

    def add(self, text: str = "") -> None:
        self.lines.append(text)

    def suggest(self, command: str) -> None:
        """The first missing step wins: stages are checked in pipeline order."""
        if self.next_step is None:
            self.next_step = command


def _exports(cfg: Config, rep: Report) -> bool:
    from .kakao.organize import collect, load_manifest

    try:
        entries = load_manifest(cfg)
    except ChatbotError as exc:
        rep.add(f"Exports      {exc}")
        rep.suggest("python -m chatbot.ops organize")
        return False
    known = {e.get("sha256") for e in entries}
    waiting = [p for p in collect(cfg) if sha256_file(p) not in known]
    rooms: dict[str, list[dict]] = {}
    for e in entries:
        rooms.setdefault(str(e.get("room_id") or e.get("room")), []).append(e)
    rep.add(f"Exports      {len(entries)} organized file(s) in {len(rooms)} room(s)"
            + (f"; {len(waiting)} new file(s) waiting to be organized" if waiting else ""))
    for room, files in sorted(rooms.items()):
        firsts = [e["first"] for e in files if e.get("first")]
        lasts = [e["last"] for e in files if e.get("last")]
        span = f"{min(firsts)[:10]} → {max(lasts)[:10]}" if firsts and lasts else "no messages"
        formats = ", ".join(sorted({str(e.get("format")) for e in files}))
        messages = sum(int(e.get("messages") or 0) for e in files)
        rep.add(f"  {room}: {len(files)} file(s) [{formats}], {messages:,} messages (overlaps counted), {span}")
    if waiting or not entries:
        if not entries and not waiting:
            rep.add(f"  no exports yet: put KakaoTalk export files into {cfg.paths.raw.inbox}/")
            rep.suggest(f"export a chat from KakaoTalk into {cfg.paths.raw.inbox}/, then python -m chatbot.ops organize")
        else:
            rep.suggest("python -m chatbot.ops organize")
        return bool(entries)
    return True


def _processed(cfg: Config, rep: Report, have_exports: bool) -> bool:
    from .data.preprocess import stale_reason

    out = cfg.processed_dir
    if not (out / processed.STATS).is_file():
        rep.add(f"Processed    missing ({cfg.paths.processed.dir}/)")
        if have_exports:
            rep.suggest("python -m chatbot.ops preprocess")
        return False
    try:
        stats = processed.load_stats(out)
        tokens = stats.get("tokens", {})
        summary = f"{tokens.get('train', 0):,} train / {tokens.get('val', 0):,} val tokens, vocabulary {stats.get('vocab_size')}"
    except ChatbotError:
        rep.add("Processed    stats.json is unreadable")
        rep.suggest("python -m chatbot.ops preprocess --force")
        return False
    reason = None
    if have_exports:
        try:
            reason = stale_reason(cfg)
        except ChatbotError as exc:
            reason = str(exc)
    if reason:
        rep.add(f"Processed    STALE ({reason}): {summary}")
        rep.suggest("python -m chatbot.ops preprocess")
    else:
        rep.add(f"Processed    current: {summary}")
    return True


def _base(cfg: Config, rep: Report) -> None:
    """Which pretrained base the run fine-tunes and whether its files are on this machine (no network)."""
    m = cfg.train.model
    if not m.base:
        rep.add("Base model   none: training from scratch (set model.base in train.yaml to fine-tune a pretrained model)")
        return
    from .base import INSTALL_HINT
    from .base.hub import find_local

    name = m.base + (f"@{m.base_revision}" if m.base_revision else "")
    a = cfg.train.adapter
    how = f"{a.kind}" + (f" r={a.r}" if a.kind == "lora" else "") + (" 4-bit" if a.quantize == "4bit" else "")
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        rep.add(f"Base model   {name} ({how}): the fine-tuning libraries are missing")
        rep.suggest(INSTALL_HINT)
        return
    folder, note = find_local(m.base, m.base_revision, root=cfg.root)
    rep.add(f"Base model   {name} ({how}): " + (f"files present ({note}: {folder})" if folder else note))


def _training(cfg: Config, rep: Report, have_data: bool) -> bool:
    from .lock import active_lock

    run = cfg.run_dir
    max_steps = cfg.train.optimization.max_steps
    lock = active_lock(run) if run.is_dir() else None
    running = f"; trainer RUNNING now (pid {lock.pid} on {lock.host})" if lock else ""
    metrics = run / "metrics.jsonl"
    if not (run / "latest.pt").is_file():
        rep.add(f"Training     run '{cfg.train.run_name}': no checkpoint yet{running}")
        if have_data and not lock:
            rep.suggest("python -m chatbot.ops train")
        return False
    last_train, last_eval = None, None
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "train":
                last_train = rec
            elif rec.get("kind") == "eval":
                last_eval = rec
    step = int(last_train["step"]) if last_train else None
    max_steps = int((last_train or {}).get("max_steps") or max_steps)  # the resolved value under size: auto
    parts = [f"step {step if step is not None else '?'} / {max_steps or 'auto'}"]
    if last_train:
        parts.append(f"train loss {last_train['loss']:.3f}")
    if last_eval:
        parts.append(f"val loss {last_eval['val_loss']:.3f}")
        if last_eval.get("best_val_loss") is not None:
            parts.append(f"best val {last_eval['best_val_loss']:.3f}")
    rep.add(f"Training     run '{cfg.train.run_name}': " + ", ".join(parts) + running)
    if lock:
        rep.suggest(f"training is running; stop it with Ctrl+C or: touch {run / cfg.train.stop_file_name}")
    elif step is not None and step < max_steps:
        rep.suggest("python -m chatbot.ops train   # resumes from latest.pt")
    return True


def _model(cfg: Config, rep: Report, trained: bool) -> None:
    from .infer.loading import find_model_source

    found = find_model_source(cfg)
    if found is None:
        rep.add("Model        none: inference has nothing to load")
        if trained:
            rep.suggest("python -m chatbot.ops publish --encrypt")
        return
    path, kind = found
    rel = relative_path(cfg.root, path) or path
    newer = [p for p in (cfg.run_dir / "best.pt", cfg.run_dir / "latest.pt")
             if kind != "checkpoint" and p.is_file() and p.stat().st_mtime > path.stat().st_mtime]
    rep.add(f"Model        inference loads {rel} ({kind})" + ("; training has moved on since it was published" if newer else ""))
    if newer:
        rep.suggest("python -m chatbot.ops publish --encrypt")


def _policy(cfg: Config, rep: Report) -> None:
    """reply_policy model on a two-person model works (it predicts plain turn-taking), but say so."""
    if cfg.gen.reply_policy != "model":
        return
    try:
        stats = processed.load_stats(cfg.processed_dir)
        persona = stats.get("persona") or {}
        speakers = persona.get("speakers") or {}
        people = sum(1 for n in speakers.values() if isinstance(n, int) and n > 0)
    except (ChatbotError, AttributeError):
        return
    if not persona.get("turn_taking") and cfg.train.objective.loss_mode != "all":
        rep.add("Replies      reply_policy model, but the training data does not teach who speaks next: set "
                "processed.preprocess.learn_turn_taking: true in paths.yaml, preprocess and train again (until "
                "then the bot speaks only when addressed)")
    elif people <= 2:
        rep.add(f"Replies      reply_policy model, speak_threshold {cfg.gen.speak_threshold:g}: the training data "
                f"has {people} speaker(s), so the model only predicts two-person turn-taking (it answers nearly "
                f"every message in a group room); reply_policy addressed fits a group room better")


def _eval(cfg: Config, rep: Report, trained: bool) -> None:
    """The last ``eval`` figures (eval.json in the run folder), flagged when the checkpoints are newer."""
    path = cfg.run_dir / "eval.json"
    if not path.is_file():
        if trained:
            rep.add("Eval         not run yet (python -m chatbot.ops eval: loss and replies vs baselines)")
        return
    from .eval.runner import summary_line

    try:
        line = summary_line(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        rep.add("Eval         eval.json is unreadable; run python -m chatbot.ops eval again")
        return
    newer = any(p.is_file() and p.stat().st_mtime > path.stat().st_mtime
                for p in (cfg.run_dir / "best.pt", cfg.run_dir / "latest.pt"))
    rep.add(f"Eval         {line}" + ("; training has moved on since" if newer else ""))


def _env(cfg: Config, rep: Report) -> None:
    missing = []
    if not (cfg.secret("CHATBOT_PASSWORD") or cfg.secret("CHATBOT_PASSWORD_HASH")):
        missing.append("CHATBOT_PASSWORD or CHATBOT_PASSWORD_HASH (needed by reply/chat/smoke/bridge)")
    key = cfg.secret("CHATBOT_MODEL_KEY")
    if not key:
        missing.append("CHATBOT_MODEL_KEY (needed by publish --encrypt)")
    elif len(key) < MIN_MODEL_KEY_CHARS:
        missing.append(f"CHATBOT_MODEL_KEY is shorter than {MIN_MODEL_KEY_CHARS} characters")
    env_file = cfg.root / ".env"
    where = ".env" if env_file.is_file() else ".env (not created yet: cp .env.example .env)"
    rep.add(f"Secrets      {where}: " + ("complete" if not missing else "missing " + "; ".join(missing)))
    if missing:
        rep.suggest("edit .env (see .env.example)")


def build_report(cfg: Config) -> Report:
    rep = Report()
    rep.add(f"kakaotalk-chatbot status — project {cfg.root}")
    have_exports = _exports(cfg, rep)
    _base(cfg, rep)
    have_data = _processed(cfg, rep, have_exports)
    trained = _training(cfg, rep, have_data)
    _model(cfg, rep, trained)
    _eval(cfg, rep, trained)
    _policy(cfg, rep)
    _env(cfg, rep)
    rep.suggest("python -m chatbot.ops chat")
    rep.add()
    rep.add(f"Next         {rep.next_step}")
    return rep


def status(cfg: Config) -> None:
    print("\n".join(build_report(cfg).lines))
