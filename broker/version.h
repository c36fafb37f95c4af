/* version.h: the daemon's version, printed by --version. */
#ifndef BROKER_VERSION_H
#define BROKER_VERSION_H

#define BROKER_VERSION "0.1.0"

#endif
