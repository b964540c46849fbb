"""The consortium's privacy policy for released aggregates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PrivacyPolicy(BaseModel):
    """Output-privacy settings, validated once when the consortium policy is loaded.

    `k` is the minimum released cell size; with `dp` on, every report adds
    discrete Laplace noise at `epsilon_per_report` and is charged to a budget of
    `epsilon_budget` per consortium and epoch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(10, ge=1)
    dp: bool = True
    epsilon_per_report: float = Field(0.5, gt=0, allow_inf_nan=False)
    epsilon_budget: float = Field(5.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _report_fits_budget(self) -> PrivacyPolicy:
        if self.epsilon_per_report > self.epsilon_budget:
            raise ValueError("epsilon_per_report must not exceed epsilon_budget")
        return self
