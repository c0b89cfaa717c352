"""The pull request's side of a PR benchmark, through the GitHub REST API: its head commit, and one comment
that every run of the workflow creates or updates.

Used by `.github/workflows/pr-benchmark.yml` as `python deployments/github_pr.py head|comment ...`; like the
trigger, it needs only httpx. The token comes from GITHUB_TOKEN and is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

# Finds the comment an earlier run wrote, so that a pull request carries one verdict, kept current.
MARKER = "<!-- diffbench pr-benchmark -->"
PAGE_SIZE = 100


class GitHubError(Exception):
    """The API refused or could not be reached; the message says which call and why."""


def client(env: dict[str, str] | os._Environ[str] = os.environ) -> httpx.Client:
    token = env.get("GITHUB_TOKEN")
    if not token:
        raise GitHubError("GITHUB_TOKEN is not set (in a workflow: secrets.GITHUB_TOKEN)")
    return httpx.Client(base_url=env.get("GITHUB_API_URL", "https://api.github.com"), timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28"})


def _call(http: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise GitHubError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
    if response.is_error:
        try:
            reason = response.json().get("message", "")
        except ValueError:
            reason = response.text[:200]
        raise GitHubError(f"{method} {path}: HTTP {response.status_code}: {reason}")
    return response


def head_commit(http: httpx.Client, repo: str, pull_request: int) -> str:
    return _call(http, "GET", f"/repos/{repo}/pulls/{pull_request}").json()["head"]["sha"]


def upsert_comment(http: httpx.Client, repo: str, pull_request: int, body: str) -> tuple[str, int]:
    """Update the comment an earlier run left on the pull request, else create it; ("created"|"updated", its id)."""
    text = f"{MARKER}\n{body}"
    page = 1
    while True:
        comments = _call(http, "GET", f"/repos/{repo}/issues/{pull_request}/comments",
                         params={"per_page": PAGE_SIZE, "page": page}).json()
        for comment in comments:
            # Ours: written by a bot (the workflow's token), starting with the marker; never a person's quote of it.
            if (comment.get("body") or "").startswith(MARKER) and (comment.get("user") or {}).get("type") == "Bot":
                _call(http, "PATCH", f"/repos/{repo}/issues/comments/{comment['id']}", json={"body": text})
                return "updated", comment["id"]
        if len(comments) < PAGE_SIZE:
            break
        page += 1
    created = _call(http, "POST", f"/repos/{repo}/issues/{pull_request}/comments", json={"body": text}).json()
    return "created", created["id"]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="github_pr.py", description=__doc__.splitlines()[0])
    root.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY"),
                      help="owner/name (default: GITHUB_REPOSITORY)")
    root.add_argument("--pr", type=int, required=True, help="the pull request's number")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("head", help="print the pull request's head commit")
    comment = commands.add_parser("comment", help="create or update the pull request's benchmark comment")
    comment.add_argument("--body-file", type=Path, required=True, help="markdown to post")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not args.repo:
            raise GitHubError("no repository: give --repo owner/name or set GITHUB_REPOSITORY")
        with client() as http:
            if args.command == "head":
                print(head_commit(http, args.repo, args.pr))
            else:
                action, comment_id = upsert_comment(http, args.repo, args.pr, args.body_file.read_text())
                print(f"{action} comment {comment_id} on {args.repo}#{args.pr}")
    except GitHubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
