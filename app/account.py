"""Endpoints of the account area (see SPEC §6); filled in by the issues that build it."""
from flask import Blueprint

bp = Blueprint("account", __name__, url_prefix="/account")
