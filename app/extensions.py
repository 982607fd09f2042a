"""The process's shared services, made once and bound to the app in create_app."""
from database import DatabaseService

db = DatabaseService()
