"""The service's terms (public): whether top-ups are on, the BYOK fee, and
which providers the operator's own keys serve, so that a client can tell what a
call will use and cost before making it (README, Who pays whom)."""
from flask import current_app

from app.api.contract import response, without_database
from app.api.pipeline import OperationBlueprint
from app.billing import house_keys
from app.money import format_money
from app.schemas import ServiceTerms

bp = OperationBlueprint("service", __name__, url_prefix="/service")


@bp.get("")
@response(ServiceTerms)
@without_database
def terms():
    """What a call will use and cost"""
    config = current_app.config
    return ServiceTerms(self_topup_enabled=config["SELF_TOPUP_ENABLED"], max_topup=format_money(config["MAX_TOPUP"]),
                        byok_fee_rate=format(config["BYOK_FEE_RATE"], "f"), house_keys=house_keys(config))
