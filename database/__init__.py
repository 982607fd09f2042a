from database.service import DatabaseService

__all__ = ["DatabaseService"]
