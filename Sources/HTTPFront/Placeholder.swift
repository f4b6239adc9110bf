import CNGHTTP2
import CMicroHTTPD
