"""Endpoints of the balance area (see SPEC §6); filled in by the issues that build it."""
from flask import Blueprint

bp = Blueprint("balance", __name__, url_prefix="/balance")
