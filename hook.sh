#!/bin/sh
env | grep ^NFH_ | sort >> /tmp/nfh6/hook.log
echo --- >> /tmp/nfh6/hook.log
