"""Endpoints of the keys area (see SPEC §6); filled in by the issues that build it."""
from flask import Blueprint

bp = Blueprint("keys", __name__, url_prefix="/keys")
