"""bounce(8): delivery status notifications; see service.py, notice.py, dsn.py and texts.py."""
