"""Endpoints of the models area (see SPEC §6); filled in by the issues that build it."""
from flask import Blueprint

bp = Blueprint("models", __name__, url_prefix="/models")
