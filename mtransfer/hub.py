"""Pushing a folder to the Hugging Face Hub: ``create_repo`` + ``upload_folder``, or a dry run.

The token comes from ``HF_TOKEN`` or ``huggingface-cli login`` and is never printed; an
unreachable Hub raises :class:`HubError` with a one-line reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


class HubError(RuntimeError):
    """The Hub could not be reached or refused the upload; the message is one line."""


REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def check_repo_id(repo_id: str) -> None:
    """Raise ``ValueError`` unless ``repo_id`` is a valid Hub id (``user/name``: letters, digits, ``-``, ``_``, ``.``)."""
    if not REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith((".", "-")):
        raise ValueError(f"--repo-id {repo_id!r}: not a valid Hub repo id; expected 'user/name' made of letters, digits, "
                         "'-', '_' and '.' (no '--' or '..', at most 96 characters each).")


def upload_plan(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """``(relative path, size in bytes)`` of every file an upload of ``folder`` sends, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder to push.")
    files = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"{root}: the folder is empty; nothing to push.")
    return files


def card_for_hub(folder: str | os.PathLike, repo_id: str) -> bytes | None:
    """The folder's ``README.md`` as it goes to ``repo_id``: a card written for the local folder loads it by its
    path in its example; on the Hub that path means nothing (and names the user's machine), so it becomes the
    repository id. None without a card."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    for local in sorted({str(Path(folder).resolve()), str(Path(folder).absolute()), str(folder)}, key=len, reverse=True):
        text = text.replace(f'"{local}"', f'"{repo_id}"')
    return text.encode("utf-8")


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, private: bool = False, branch: str | None = None,
                commit_message: str = "Upload model trained with mtransfer", token: str | None = None,
                dry_run: bool = False) -> list[tuple[str, int]] | str:
    """Create the repo if needed and upload ``folder``; with ``dry_run``, only return what would be uploaded.

    Returns:
        The file list (dry run) or the commit URL.

    Raises:
        HubError: The Hub is unreachable, switched off, or refused (the reason in one line).
    """
    check_repo_id(repo_id)
    files = upload_plan(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    endpoint = api.endpoint
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        from huggingface_hub import CommitOperationAdd

        card = card_for_hub(folder, repo_id)
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(Path(folder) / rel))
                      for rel, _ in files if not (rel == "README.md" and card is not None)]
        if card is not None:
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=branch,
                                 repo_type="model")
    except Exception as err:  # noqa: BLE001  (network, auth and offline errors all become one line)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if token and token in reason:
            reason = reason.replace(token, "***")
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            reason = "HF_HUB_OFFLINE is set, so no request is sent"
        raise HubError(f"Cannot push {folder} to {repo_id} at {endpoint}: {type(err).__name__}: {reason}") from None
    return str(getattr(info, "commit_url", info))


