"""Endpoints of the chat area (see SPEC §6); filled in by the issues that build it."""
from flask import Blueprint

bp = Blueprint("chat", __name__, url_prefix="/chat")
