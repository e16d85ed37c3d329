"""The served model and how it changes: `GET /api/model`, hot swap to an export (`POST /api/model/load`), back to
the previous one (`POST /api/model/rollback`), specialize runs (`POST`/`GET /api/specialize`), and the `/model` page
(everyone sees what is served; the button, the progress and the log are for admin keys). Admin keys only otherwise:
these start training on the server's CPU and change every user's answers.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import AdminDep, ServiceDep, SettingsDep, UiAdminDep, UiPrincipalDep
from app.api.routes.ui import _page, templates
from app.nl2sql.hotswap import ModelBusy, ModelLoadError, ModelPathError, Swapper, describe, export_dir
from app.nl2sql.service import QueryService
from app.nl2sql.specialize import AlreadyRunning, SpecializeRunner

router = APIRouter(
    tags=["model"],
    responses={
        401: {"description": "No API key, or a wrong one"},
        403: {"description": "Admin keys only"},
        413: {"description": "Body too large"},
    },
)
NO_PREVIOUS = "There is no earlier model to roll back to: the served model has not been swapped since the start."


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1000, description="an export directory under MODEL_EXPORTS_DIR")


def model_info(service: QueryService) -> dict:
    return {"model_id": service.model_id, "served": describe(service.generator), "previous": describe(service.previous)}


def _swapper(request: Request) -> Swapper:
    return request.app.state.swapper


def _runner(request: Request) -> SpecializeRunner:
    return request.app.state.specialize


@router.get("/api/model")
async def get_model(service: ServiceDep, principal: AdminDep) -> dict:
    """The served model and the one a rollback returns to."""
    return model_info(service)


@router.post(
    "/api/model/load",
    responses={
        400: {"description": "The body could not be read"},
        409: {"description": "A swap is already under way"},
        422: {"description": "Not an export directory under MODEL_EXPORTS_DIR"},
    },
)
async def load_model(
    body: LoadRequest, request: Request, service: ServiceDep, settings: SettingsDep, principal: AdminDep
):
    """Serve another export (under MODEL_EXPORTS_DIR) from the next step boundary; requests in flight finish."""
    try:
        path = export_dir(body.path, settings.model_exports_dir)
        await _swapper(request).load_path(path)
    except (ModelPathError, ModelLoadError) as exc:
        raise HTTPException(422, str(exc)) from None
    except ModelBusy as exc:
        raise HTTPException(409, str(exc)) from None
    return model_info(service)


@router.post("/api/model/rollback", responses={409: {"description": "No previous model to return to"}})
async def rollback(request: Request, service: ServiceDep, principal: AdminDep) -> dict:
    """Serve the model from before the last swap (twice: back again)."""
    try:
        if not await _swapper(request).rollback():
            raise HTTPException(409, NO_PREVIOUS)
    except ModelBusy as exc:
        raise HTTPException(409, str(exc)) from None
    return model_info(service)


@router.post("/api/specialize", status_code=202, responses={409: {"description": "A run is already under way"}})
async def start_specialize(request: Request, service: ServiceDep, principal: AdminDep) -> dict:
    """Start `python -m models.specialize` (SPECIALIZE_PRESET) in a separate process; 409 while one runs."""
    try:
        return _runner(request).start(service.generator.model_dir, principal.name)
    except AlreadyRunning as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/api/specialize")
async def specialize_status(request: Request, principal: AdminDep) -> dict:
    """The latest run: state, stage, percent, message, its evaluation and the tail of its log."""
    return _runner(request).status()


# --- the page -----------------------------------------------------------------------------------------------------


def _fragment(request: Request, name: str, context: dict) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


@router.get("/model", response_class=HTMLResponse, include_in_schema=False)
async def model_page(request: Request, service: ServiceDep, principal: UiPrincipalDep) -> HTMLResponse:
    ctx = {"page": "model", "model_id": service.model_id, "info": model_info(service)}
    if principal.admin:
        ctx["st"] = _runner(request).status()
    return _page(request, "model.html", principal, ctx)


@router.get("/ui/specialize", response_class=HTMLResponse, include_in_schema=False)
async def specialize_fragment(request: Request, principal: UiAdminDep) -> HTMLResponse:
    return _fragment(request, "_specialize.html", {"st": _runner(request).status()})


@router.post("/ui/specialize", response_class=HTMLResponse, include_in_schema=False)
async def specialize_button(request: Request, service: ServiceDep, principal: UiAdminDep) -> HTMLResponse:
    runner, error = _runner(request), None
    try:
        runner.start(service.generator.model_dir, principal.name)
    except AlreadyRunning as exc:  # the page shows the refusal (htmx does not swap a 409 in)
        error = str(exc)
    return _fragment(request, "_specialize.html", {"st": runner.status(), "error": error})


@router.post("/ui/model/rollback", response_class=HTMLResponse, include_in_schema=False)
async def rollback_button(request: Request, service: ServiceDep, principal: UiAdminDep) -> HTMLResponse:
    error = None
    try:
        if not await _swapper(request).rollback():
            error = NO_PREVIOUS
    except ModelBusy as exc:
        error = str(exc)
    ctx = {"info": model_info(service), "error": error, "principal": principal}
    return _fragment(request, "_model.html", ctx)
