"""Settings read from the environment (`DIFFBENCH_*`) once, at the edge, and passed down."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where diffbench keeps things and what it may use on this host.

    Every field can be set as `DIFFBENCH_<FIELD>`; the Hugging Face token also as `HF_TOKEN`.
    """

    model_config = SettingsConfigDict(env_prefix="DIFFBENCH_", env_nested_delimiter="__", extra="ignore")

    database_url: SecretStr = Field(
        SecretStr("sqlite:///.diffbench/diffbench.db"),
        description="SQLAlchemy URL of the results database; a secret because it may hold a password.",
    )
    state_dir: Path = Field(Path(".diffbench"), description="Server logs, perf dumps, pid files and the spool.")
    model_cache: Path | None = Field(None, description="Shared model cache; default: Hugging Face's own cache.")
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("DIFFBENCH_HF_TOKEN", "HF_TOKEN"))
    hf_token_block: str | None = Field(None, description="Name of a Prefect Secret block holding the HF token.")
    gpus: list[int] | None = Field(None, description="GPU ids this host may use; default: every GPU NVML sees.")
    host_label: str = Field(default_factory=socket.gethostname, description="Names this host on each result.")
    retry_delays_s: list[float] = Field([10, 60], description="Waits before the retries of a failed step.")
    dashboard_dir: Path = Field(Path(".diffbench/dashboard"), description="Where the flow renders the dashboard.")
    host_lock: Path = Field(Path(tempfile.gettempdir()) / "diffbench-measuring.lock",
                            description="The lock that lets one run measure on this host at a time.")
    envs_dir: Path | None = Field(None, description="Engine venvs built from pip specs; default: <state_dir>/envs.")

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def engine_envs_dir(self) -> Path:
        return self.envs_dir or self.state_dir / "envs"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"
