module shmbridge

go 1.19
