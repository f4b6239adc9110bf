// Intentionally empty: SwiftPM needs one source file for the header-only module.
#include "CFuzzDriver.h"
