"""Request and response bodies, declared once: they validate requests, shape
responses, and describe the API in /openapi.json. One module per area; every
model is importable from here."""
from app.schemas.access_keys import AccessKey, AccessKeyPage, NewAccessKey, NewAccessKeyRequest
from app.schemas.accounts import (ActivityItem, ActivityPage, Balance, CallActivity, LoginRequest, Preferences,
                                  PreferencesBody, Profile, RefreshRequest, RegisterRequest, TokenPair, User)
from app.schemas.balance import LedgerEntry, ServiceTerms, TopUpRequest, TopUpResponse, TransactionPage
from app.schemas.catalog import (CatalogEntry, DailyUsage, ModelAccess, ModelAccessList, ModelDetail, ModelList,
                                 ModelUsage, Rating, RatingRequest, RatingSummary, Recommendation, RecommendationList,
                                 RecommendRequest)
from app.schemas.chat import (Message, MessageExchange, NewMessageRequest, NewSessionRequest, Session, SessionPage,
                              SessionWithMessages, Usage)
from app.schemas.fields import EMAIL_MAX_LENGTH, PATTERN_MESSAGES, Email, Request, Response, Username
from app.schemas.keys import KeyList, NewKeyRequest, StoredKey
from app.schemas.usage import UsageQuery, UsageReport, UsageRow

__all__ = [
    "AccessKey", "AccessKeyPage", "NewAccessKey", "NewAccessKeyRequest",
    "ActivityItem", "ActivityPage", "Balance", "CallActivity", "CatalogEntry", "DailyUsage", "EMAIL_MAX_LENGTH",
    "Email", "KeyList",
    "LedgerEntry", "LoginRequest", "Message", "MessageExchange", "ModelAccess", "ModelAccessList", "ModelDetail",
    "ModelList", "ModelUsage",
    "NewKeyRequest", "NewMessageRequest", "NewSessionRequest", "PATTERN_MESSAGES", "Preferences", "PreferencesBody",
    "Profile", "Rating", "RatingRequest", "RatingSummary", "Recommendation", "RecommendationList",
    "RecommendRequest", "RefreshRequest", "RegisterRequest", "Request", "Response", "ServiceTerms", "Session",
    "SessionPage",
    "SessionWithMessages", "StoredKey", "TokenPair", "TopUpRequest", "TopUpResponse", "TransactionPage", "Usage",
    "UsageQuery", "UsageReport", "UsageRow", "User", "Username",
]
