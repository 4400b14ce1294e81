"""core/sam3"""
