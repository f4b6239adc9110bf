import KVEngine
