"""FastAPI dependencies as `Annotated` aliases: the app's long-lived components live on `app.state`."""

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.metrics import Metrics
from app.nl2sql.service import QueryService


def get_service(request: Request) -> QueryService:
    return request.app.state.service


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ServiceDep = Annotated[QueryService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
