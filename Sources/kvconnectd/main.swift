import KVEngine
import KVConnect
import HTTPFront
print("kvconnectd")
